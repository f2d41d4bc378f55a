"""Incremental reruns of the real workflow, checked with dry runs (no job is executed).

A tiny synthetic setup (empty placeholder scans, two cohorts) is brought to "everything done":
every output of `all` is created empty (directories for directory outputs) and `snakemake --touch`
records them as produced by the current config. Then, with the local profile's rerun triggers
(mtime, params, input; the SLURM profile uses the same), `snakemake --summary` says which outputs
would be rebuilt:
- nothing changed -> nothing to do;
- a training hyperparameter changed -> that model and what depends on it, no preprocessing;
- an evaluate setting changed -> the evaluation stages that read it (and the report), nothing else;
- a third cohort added -> its preprocessing and metadata, plus the aggregate steps downstream
  (manifest and what reads it), none of the other cohorts' preprocessing or metadata jobs.
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dag_script import dag_script

from braing3n.bench.dag import CohortShape, synth_scans, write_setup

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
PROFILE = str(REPO / "profiles" / "local")
# A cohort's own preprocessing and metadata jobs; their outputs carry the cohort name in the path.
PREPROCESS_RULES = {"preprocess_session", "qc_table", "derivatives_description"}
PER_COHORT_RULES = PREPROCESS_RULES | {"harmonise"}

MATERIALISE = dag_script('''
# create every output of the DAG for `all` (empty files, directories for directory outputs)
n = 0
for job in workflow.dag.jobs:
    for f in list(job.output) + list(job.log):
        path = Path(str(f))
        if f.is_directory:
            path.mkdir(parents=True, exist_ok=True)
            (path / "placeholder").touch()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        n += 1
print(f"materialised {n} outputs")
''')


def _run(args: list[str], workdir: Path, timeout: int = 300, stdout_only: bool = False) -> str:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    res = subprocess.run(args, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)
    out = res.stdout + res.stderr
    if res.returncode != 0:
        raise AssertionError(f"{' '.join(args[:4])}... failed ({res.returncode}):\n{out[-4000:]}")
    return res.stdout if stdout_only else out


def _snakemake(workdir: Path, configfile: Path, *extra: str, stdout_only: bool = False) -> str:
    return _run([SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--profile", PROFILE,
                 "--configfile", str(configfile), *extra], workdir, stdout_only=stdout_only)


def pending(workdir: Path, configfile: Path) -> list[dict]:
    """Outputs `all` would (re)build, from `snakemake --summary` (rows whose plan is not 'no update')."""
    out = _snakemake(workdir, configfile, "--summary", "all", stdout_only=True)
    table = out[out.index("output_file\t"):]
    rows = list(csv.DictReader(io.StringIO(table), delimiter="\t"))
    assert rows, f"empty summary:\n{out[-2000:]}"
    return [r for r in rows if r["plan"] != "no update"]


def _write(config: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


pytestmark = pytest.mark.slow  # 20-45 s: six snakemake runs of the real workflow


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """A finished run of two cohorts; returns (root, base config dict, the third cohort's spec)."""
    root = tmp_path_factory.mktemp("incremental")
    shapes = (CohortShape("alpha", 2, ("T1", "FLAIR")), CohortShape("beta", 2, ("T1",)),
              CohortShape("gamma", 2, ("T1",)))
    config = yaml.safe_load(write_setup(synth_scans(8, seed=0, shapes=shapes), root).read_text())
    gamma = config["cohorts"].pop("gamma")
    base = _write(config, root / "base.yaml")
    workdir = root / "wd"
    workdir.mkdir()
    for name in ("config", "resources"):  # rules name some inputs relative to the repository root
        (workdir / name).symlink_to(REPO / name)
    (root / "materialise.py").write_text(MATERIALISE)
    _run([sys.executable, str(root / "materialise.py"), str(REPO / "Snakefile"), str(workdir), str(base)], workdir)
    _snakemake(workdir, base, "--touch", "--forceall", "--cores", "1", "all")  # -F: record every job
    return root, config, gamma


def test_second_run_with_nothing_changed_does_nothing(done):
    root, config, _ = done
    assert pending(root / "wd", root / "base.yaml") == []
    out = _snakemake(root / "wd", root / "base.yaml", "-n", "all")
    assert "Nothing to be done" in out


def test_training_hyperparameter_does_not_rerun_preprocessing(done):
    root, config, _ = done
    changed = yaml.safe_load(yaml.safe_dump(config))
    changed.setdefault("train", {}).setdefault("mae", {})["lr"] = 0.123
    rows = pending(root / "wd", _write(changed, root / "mae_lr.yaml"))
    rules = {r["rule"] for r in rows}
    assert "train_mae" in rules, rows  # the changed model is retrained ...
    assert not rules & (PER_COHORT_RULES | {"manifest", "store"}), sorted(rules)  # ... nothing upstream


def test_adding_a_cohort_reruns_only_its_preprocessing_and_the_aggregates(done):
    root, config, gamma = done
    added = yaml.safe_load(yaml.safe_dump(config))
    added["cohorts"]["gamma"] = gamma
    rows = pending(root / "wd", _write(added, root / "add_gamma.yaml"))
    rules = {r["rule"] for r in rows}
    per_cohort = [r for r in rows if r["rule"] in PER_COHORT_RULES]
    assert per_cohort, sorted(rules)
    others = [r["output_file"] for r in per_cohort if "gamma" not in r["output_file"]]
    assert others == [], others  # alpha/beta preprocessing and metadata stay done
    new_sessions = [r["output_file"] for r in rows if r["rule"] == "preprocess_session"]
    assert len(new_sessions) == 2 and all("/gamma/" in f for f in new_sessions), new_sessions  # gamma's two sessions
    assert {"harmonise", "manifest"} <= rules  # gamma's metadata + the combined manifest


def test_an_evaluate_setting_reruns_only_the_stages_that_read_it(done):
    root, config, _ = done

    def edit(name: str, **keys) -> set:
        changed = yaml.safe_load(yaml.safe_dump(config))
        ev = changed.setdefault("evaluate", {})
        for key, value in keys.items():
            section, _, sub = key.partition("__")
            ev[section] = {**ev.get(section, {}), sub: value} if sub else value
        return {r["rule"] for r in pending(root / "wd", _write(changed, root / f"{name}.yaml"))}

    models = {"train_mae", "train_decoder", "train_dit", "train_dit_long", "train_aekl", "export"}
    # the sweep and what reads its samples (FID, memorisation, the report's figures) plus the report; nothing else
    rules = edit("guidance_n", guidance__n_per_value=3)
    assert rules == {"guidance", "fid", "memorisation", "report_figures", "report"}, sorted(rules)
    # bootstrap resamples: the probes, their comparison and the tokenizer table's probes; no model
    rules = edit("n_boot", n_boot=17)
    assert {"probes", "compare_encoders", "tokenizers"} <= rules, sorted(rules)
    assert not rules & (models | {"guidance", "longitudinal", "embed_baseline"}), sorted(rules)
    # the probes' latent pooling is read by every latent probe, not by the encoder probes
    rules = edit("pool", guidance__latent_pool=1)
    assert {"guidance", "memorisation", "longitudinal", "tokenizers"} <= rules, sorted(rules)
    assert not rules & (models | {"probes", "compare_encoders"}), sorted(rules)


def test_speed_only_settings_rerun_nothing_and_each_setting_reruns_its_readers(done):
    root, config, _ = done

    def edit(name: str, changes: dict) -> set:
        changed = yaml.safe_load(yaml.safe_dump(config))
        for dotted, value in changes.items():
            *path, key = dotted.split(".")
            node = changed
            for k in path:
                node = node.setdefault(k, {})
            node[key] = value
        return {r["rule"] for r in pending(root / "wd", _write(changed, root / f"{name}.yaml"))}

    # how fast and where jobs run: not what they compute (it used to rerun every session or model)
    speed = {"train.engine.num_workers": 3, "train.engine.log_every": 7, "train.mae.ckpt_every": 11,
             "preprocess.threads": 3, "preprocess.hdbet.device": "cpu", "store.workers": 3, "evaluate.batch_size": 3,
             "generate.batch_size": 3}
    assert edit("speed", speed) == set()
    # the QC flag threshold is read by the QC table, not by the per-session jobs
    rules = edit("robust_z", {"preprocess.robust_z": 2.5})
    assert "qc_table" in rules and "preprocess_session" not in rules, sorted(rules)
    # the ODE solver is read by every sampling job, the forecast included
    rules = edit("solver", {"generate.solver": "euler"})
    assert {"generate_arm", "forecast_demo"} <= rules, sorted(rules)
