"""Scripts that build the real workflow's DAG for `all` through Snakemake's API, each in a fresh
process (`python script.py SNAKEFILE WORKDIR CONFIGFILE`), then run a test's body on its jobs."""

import textwrap

_HEAD = textwrap.dedent('''
    import json
    import sys
    from pathlib import Path

    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import (ConfigSettings, DAGSettings, OutputSettings, ResourceSettings,
                                          StorageSettings)

    snakefile, workdir, configfile = map(Path, sys.argv[1:4])
    with SnakemakeApi(OutputSettings(quiet={"all"})) as api:
        wf = api.workflow(resource_settings=ResourceSettings(cores=1), config_settings=ConfigSettings(
            configfiles=[configfile]), storage_settings=StorageSettings(), snakefile=snakefile, workdir=workdir)
        wf.dag(DAGSettings(targets={"all"}))
        workflow = wf._workflow
        workflow._prepare_dag(forceall=False, ignore_incomplete=True, lock_warn_only=True)
        workflow._build_dag()
''')


def dag_script(body: str) -> str:
    """Script text: build the DAG, then run ``body`` (it sees `workflow`, `Path`, `json`, `sys`)."""
    return _HEAD + textwrap.indent(textwrap.dedent(body), "    ")
