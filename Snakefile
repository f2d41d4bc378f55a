# BrainG3N: raw brain MRI -> SRI24 atlas space -> MAE tokenizer -> flow-matching DiT -> reports.
#   snakemake --profile local all --configfile config/demo.yaml   (laptop / CI: the demo)
#   snakemake --profile slurm all                                  (cluster: config/config.yaml)
# `local` and `slurm` at the repository root are links to profiles/local and profiles/slurm, so
# Snakemake's profile lookup (a name is searched in the working directory first) finds them.
# Rules are thin: each names inputs/outputs/resources/log and calls the `braing3n` CLI.
import gc
import os
import sys

from snakemake.utils import min_version

from braing3n.config import ConfigError, load_schema, validate_config

min_version("9.0")

# Snakemake keeps one Job per scan (35k on the paper-sized setup), each with its own IOFiles,
# wildcards and resources: millions of long-lived objects that Python's cyclic GC walks again
# and again while they are being created. Measured on `braing3n bench dag` (35,309 scans): 10-12%
# of the dry run's CPU. Collect less often (cycles are still collected) and freeze what parsing
# built (below).
gc.set_threshold(50_000, 20, 20)


# config/config.yaml is the default only: a --configfile replaces it (Snakemake's `configfile:`
# directive would merge the two, leaking the template's cohorts into e.g. the demo).
# `--config key=value` overrides are already in `config` then, and must win over the template.
if not workflow.configfiles:
    import yaml
    from snakemake.utils import update_config

    with open("config/config.yaml") as _fh:
        _template = yaml.safe_load(_fh)
    update_config(_template, config)
    config.clear()
    config.update(_template)


# A config error is one line naming the file and the key, before any job (schema, cross-key rules
# here; cohort roots, scans and spreadsheets in common.smk): sys.exit prints just the message.
CONFIG_SOURCE = " + ".join(map(str, workflow.configfiles)) or "config/config.yaml"
try:
    validate_config(
        config, CONFIG_SOURCE, load_schema(os.path.join(workflow.basedir, "workflow/schemas/config.schema.yaml"))
    )
except ConfigError as exc:
    sys.exit(str(exc))


include: "workflow/rules/common.smk"
include: "workflow/rules/phantom.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/derivatives.smk"
include: "workflow/rules/metadata.smk"
include: "workflow/rules/tokenizer.smk"
include: "workflow/rules/generator.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


gc.freeze()  # the scan index, mappings and rules live for the whole run: never rescan them


rule all:
    default_target: True
    input:
        ALL_TARGETS,
