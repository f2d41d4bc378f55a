# Shared helpers: cohorts, the scan list per cohort, output paths. No rules here.
import os
import shlex
import shutil
import sys

import yaml

from braing3n.config import SPEED_ONLY_KEYS, SPEED_ONLY_TRAIN_KEYS, ConfigError, check_cohort
from braing3n.metadata.discover import discover_scans
from braing3n.metadata.mapping import load_cohort_mapping
from braing3n.paths import Layout, model_dir_for

R = config["results"]
L = Layout(R)


def _conda_envs():
    """True under `--sdm conda`: jobs then run in workflow/envs/*.yaml, which install braing3n."""
    try:
        from snakemake.settings.types import DeploymentMethod

        return DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
    except (ImportError, AttributeError):
        return False


# The console script of the installed package: from PATH (conda envs, activated venvs), else the
# one beside the Python running Snakemake (`.venv/bin/snakemake` called without activating).
_BIN = "" if _conda_envs() or shutil.which("braing3n") else os.path.dirname(sys.executable)
BRAING3N = shlex.quote(os.path.join(_BIN, "braing3n")) if _BIN else "braing3n"  # a venv path may hold spaces
PYTHON = shlex.quote(os.path.join(_BIN, "python")) if _BIN else "python"
# Training runs through the launcher: DDP over every GPU of the job's allocation (docs/slurm.md).
# train.nproc_per_node fixes the process count (e.g. 2 CPU processes over gloo on a CPU-only node).
_NPROC = config["train"].get("nproc_per_node")
LAUNCH = f"{PYTHON} -m braing3n.train.launch" + (f" --nproc-per-node {int(_NPROC)}" if _NPROC else "") + " --"
# Snakemake empties a job's log before each attempt, so a retried or requeued training job would
# lose the error that ended the attempt before: on failure the log is copied beside itself, named
# by the time (`<log>.failed-YYYYmmddTHHMMSS`), and the exit status kept. Appended to a shell line.
KEEP_FAILED_LOG = " || {{ s=$?; cp {log:q} {log:q}.failed-$(date +%Y%m%dT%H%M%S) || true; exit $s; }}"


def _effective_config_file():
    """The validated config as Snakemake sees it (config files merged, --config overrides applied,
    defaults filled) in a file named by its content hash, written once and never overwritten: a
    dry run or `--report` with another config writes its own file instead of changing the one
    that running or grouped jobs of this config read. An unchanged rerun finds the file as is."""
    import hashlib

    text = yaml.safe_dump(config, sort_keys=True)
    name = f"config-{hashlib.sha256(text.encode()).hexdigest()[:16]}.yaml"
    path = os.path.join(R, ".braing3n", name)
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    return path


# every value below that reaches a shell line is quoted for it (shlex.quote here, `{x:q}` in the
# rules): a results or cohort path may hold $(...), backticks, quotes, ; & |
CONFIGFILES = f"--configfile {shlex.quote(_effective_config_file())}"


def workdir_path(path):
    """``path`` relative to the working directory when it lies under it (the shipped atlas under
    resources/): inputs are recorded by path, so an absolute one would make a moved or re-cloned
    checkout rerun every job ("set of input files has changed")."""
    rel = os.path.relpath(str(path))
    return str(path) if rel.startswith("..") else rel


def results_only(value, path):
    """The config section at dotted ``path`` without the keys that change only speed or placement
    (braing3n.config.SPEED_ONLY_*): what the params rerun trigger sees, so editing
    train.engine.num_workers or preprocess.threads reruns nothing."""
    if not isinstance(value, dict):
        return value
    train_section = path.startswith("train.") and path.count(".") == 1
    drop = SPEED_ONLY_TRAIN_KEYS if train_section else SPEED_ONLY_KEYS.get(path, ())
    return {k: results_only(v, f"{path}.{k}") for k, v in value.items() if k not in drop}


COHORTS = {name: spec for name, spec in config["cohorts"].items() if spec.get("enabled", True)}

# Targets that stages append to; `rule all` collects them.
ALL_TARGETS = []


def _scans(cohort):
    spec = COHORTS[cohort]
    if "phantom" in spec:
        from braing3n.phantom.plan import plan_cohort

        return plan_cohort(cohort, spec, config).scans
    try:
        mapping = load_cohort_mapping(spec["mapping"])
    except OSError as exc:
        sys.exit(f"{CONFIG_SOURCE}: cohorts.{cohort}.mapping: cannot read {spec['mapping']}: {exc.strerror}")
    except ValueError as exc:
        sys.exit(f"{CONFIG_SOURCE}: cohorts.{cohort}.mapping: {exc}")
    # duplicates=[]: two files with one scan_id keep the first (path order) instead of failing the
    # whole DAG; `braing3n harmonise` lists the extra file in the cohort's issues report.
    scans = discover_scans(cohort, mapping, spec["root"], duplicates=[])
    try:  # a missing root, no matching file, no spreadsheet, no T1: one line, before any job
        check_cohort(cohort, spec, mapping, scans, CONFIG_SOURCE)
    except ConfigError as exc:
        sys.exit(str(exc))
    return scans


SCANS = {c: _scans(c) for c in COHORTS}
# (cohort, subject, session) -> {modality: raw path}: what one preprocessing job reads
SESSION_RAWS = {}
for _scan in (s for c in SCANS for s in SCANS[c]):
    SESSION_RAWS.setdefault((_scan.cohort, _scan.subject, _scan.session), {})[_scan.modality] = _scan.path


def sessions(cohort):
    return sorted({(s.subject, s.session) for s in SCANS[cohort]})


wildcard_constraints:
    cohort=r"[A-Za-z0-9]+",
    subject=r"[A-Za-z0-9]+",
    session=r"[A-Za-z0-9]+",
    modality=r"T1|T2|FLAIR|T1c",
