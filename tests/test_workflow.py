"""The Snakemake DAG of the demo: every stage is there, in one dry run, on a fresh clone."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))

STAGE_RULES = {
    "phantom": ["phantom_phantommem", "phantom_phantomonc"],
    "preprocess": ["preprocess_session", "qc_table", "derivatives_description"],
    "metadata": ["harmonise", "manifest"],
    "tokenizer": ["store", "train_mae", "train_decoder", "export", "reconstruct"],
    "generator": ["train_dit", "train_dit_long", "generate_arm", "forecast_demo"],
    "evaluate": ["probes", "compare_encoders", "fid", "guidance", "memorisation", "longitudinal", "tokenizers",
                 "train_aekl"],
    "report": ["report_figures", "report"],
}


def _snakemake(tmp_path, *extra, configfiles=("config/demo.yaml",)):
    return subprocess.run(
        [SNAKEMAKE, "all", "-n", "--configfile", *configfiles, "--cores", "1", "--directory", str(REPO),
         "--config", f"results={tmp_path}/results", *extra],
        cwd=REPO, capture_output=True, text=True, timeout=300)


def _dry_run(tmp_path, *extra, configfiles=("config/demo.yaml",)):
    out = _snakemake(tmp_path, *extra, configfiles=configfiles)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout + out.stderr


def _job_counts(text):
    block = text.split("Job stats:")[1].split("total")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\S+)\s+(\d+)$", block, re.M)}


def test_demo_dry_run_lists_every_stage(tmp_path):
    counts = _job_counts(_dry_run(tmp_path))
    for stage, rules in STAGE_RULES.items():
        for rule in rules:
            assert counts.get(rule, 0) >= 1, f"stage {stage}: rule {rule} missing from the demo DAG: {counts}"
    from braing3n.config import load_config
    from braing3n.phantom.plan import plan_cohort

    cfg = load_config(REPO / "config" / "demo.yaml")
    scans = [s for c, spec in cfg["cohorts"].items() for s in plan_cohort(c, spec, cfg).scans]
    sessions = {(s.cohort, s.subject, s.session) for s in scans}
    assert counts["preprocess_session"] == len(sessions) < len(scans)  # one job per session, not per scan


def test_template_config_is_not_merged_into_the_demo(tmp_path):
    text = _dry_run(tmp_path)
    assert "IXI" not in text


def test_cross_key_rules_stop_snakemake_before_the_dag(tmp_path):
    # the Snakefile applies config.check_cross_keys before building the DAG (not hours later, at the stage)
    import yaml

    cfg = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    cfg["evaluate"]["guidance"].update(fixed={"sex": "F"}, conditions={"sex": ["F", "M"], "age": [60, 80]})
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cfg))
    out = _snakemake(tmp_path, configfiles=(str(tmp_path / "bad.yaml"),))
    assert out.returncode != 0 and "['sex'] both fixed and swept" in out.stdout + out.stderr


def test_gpu_overlay_reaches_every_rule(tmp_path):
    # Snakemake merges the two --configfile documents as load_configs does: the config copy every rule's
    # CLI call reads (results/.braing3n/config-<hash>.yaml) holds the overlay (tests/test_config.py checks its keys)
    from braing3n.config import load_config

    text = _dry_run(tmp_path, "-p", configfiles=("config/demo.yaml", "config/demo_gpu.yaml"))
    assert "train_mae" in text
    (path,) = (tmp_path / "results" / ".braing3n").glob("config-*.yaml")
    assert f"--configfile {path}" in text  # the file the jobs' command lines name
    seen = load_config(path)
    assert (seen["device"], seen["train"]["mae"]["preset"], seen["train"]["engine"]["bf16"]) == ("cuda", "vitb", True)
    assert seen["cohorts"] == load_config(REPO / "config" / "demo.yaml")["cohorts"]


def test_a_dry_run_with_another_config_leaves_the_running_configs_file_alone(tmp_path):
    """Jobs of a running workflow read its config file; a preview with an edited config must not
    rewrite it (it used to: every parse overwrote results/.braing3n/config.yaml)."""
    import yaml

    _dry_run(tmp_path)
    (running,) = (tmp_path / "results" / ".braing3n").glob("config-*.yaml")
    before = running.read_bytes()
    (tmp_path / "solver.yaml").write_text(yaml.safe_dump({"generate": {"solver": "euler"}}))
    _dry_run(tmp_path, configfiles=("config/demo.yaml", str(tmp_path / "solver.yaml")))
    files = sorted((tmp_path / "results" / ".braing3n").glob("config-*.yaml"))
    assert len(files) == 2 and running.read_bytes() == before
    assert [yaml.safe_load(f.read_text())["generate"]["solver"] for f in files if f != running] == ["euler"]


def test_command_line_overrides_win_over_the_default_config(tmp_path):
    """Without --configfile the template is the config, and `--config` overrides still apply."""
    import yaml

    subprocess.run([SNAKEMAKE, "all", "-n", "--cores", "1", "--directory", str(REPO),
                    "--config", f"results={tmp_path}/results", "seed=7"],
                   cwd=REPO, capture_output=True, text=True, timeout=300)
    (path,) = (tmp_path / "results" / ".braing3n").glob("config-*.yaml")
    seen = yaml.safe_load(path.read_text())
    assert seen["seed"] == 7 and "IXI" in seen["cohorts"]  # the template's cohorts, the override's seed


def test_an_external_encoders_weight_file_is_an_input_of_its_jobs(tmp_path):
    """Replacing a user-supplied checkpoint in place must rerun its embeddings and the FID."""
    import yaml

    weights = tmp_path / "medicalnet_r50.pth"
    weights.write_bytes(b"not read by a dry run")
    overlay = {"evaluate": {"baselines": ["random_vit", "medicalnet"],
                            "encoders": {"medicalnet": {"weights": str(weights)}}}}
    (tmp_path / "ext.yaml").write_text(yaml.safe_dump(overlay))
    text = _dry_run(tmp_path, configfiles=("config/demo.yaml", str(tmp_path / "ext.yaml")))
    jobs = [block for block in text.split("\n\n") if str(weights) in block]
    rules = {m.group(1) for block in jobs for m in re.finditer(r"rule (\w+):", block)}
    assert {"embed_baseline", "fid"} <= rules, rules


def test_shipped_atlas_inputs_are_recorded_relative_to_the_checkout(tmp_path):
    """Absolute atlas paths made a moved or re-cloned checkout rerun every session and phantom job."""
    text = _dry_run(tmp_path)
    assert "resources/atlas/" in text and f"{REPO}/resources/atlas" not in text


def test_training_jobs_keep_the_log_of_a_failed_attempt(tmp_path):
    """Snakemake empties a job's log before a retry: each training command copies it aside on failure."""
    text = _dry_run(tmp_path, "-p")
    for rule in ("train_mae", "train_decoder", "train_dit", "train_dit_long", "train_aekl"):
        block = text.split(f"rule {rule}:")[1].split("\n\n")[0]
        shell = text.split(f"rule {rule}:")[1].split("train.launch")[1].split("\n")[0]
        assert ".log.failed-$(date +%Y%m%dT%H%M%S) || true; exit $s; }" in shell, (rule, block, shell)


# --- profiles by name, from the repository root (README's commands, verbatim) ---------------------

def _at_root(*args, timeout=300):
    """`snakemake ARGS` run from the repository root with the venv on PATH, as README says."""
    import os

    env = dict(os.environ, PATH=f"{Path(SNAKEMAKE).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run(["snakemake", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def _error_lines(out):
    """What snakemake printed besides its own 'Using profile ...' banner."""
    return [ln for ln in (out.stdout + out.stderr).splitlines() if ln.strip() and not ln.startswith("Using profile")]


def test_profile_names_resolve_from_the_repository_root(tmp_path):
    # `--profile slurm` / `--profile local` verbatim: the shipped template stops on its missing root
    for profile in ("slurm", "local"):
        out = _at_root("--profile", profile, "all", "-n")
        assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
        assert _error_lines(out) == ["config/config.yaml: cohorts.IXI.root: /data/IXI does not exist (or is not a "
                                     "folder); point it at the cohort's download or set cohorts.IXI.enabled: false"]
        assert f"Using profile {profile} for setting default command line arguments." in out.stdout + out.stderr
    # ... and plans the demo through the profile (the slurm one groups the sessions' preprocessing)
    out = _at_root("--profile", "slurm", "all", "-n", "--configfile", "config/demo.yaml",
                   "--config", f"results={tmp_path}/results")
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("Group job preprocess") == 1 and "executor: slurm" not in out.stderr
    counts = _job_counts(out.stdout + out.stderr)
    assert counts["report"] == 1 and counts["preprocess_session"] > 20


# --- config errors at parse time: one line each, before any job --------------------------------

def _real_cohort(tmp_path, files=("ADNI/127_S_0001/bl/127_S_0001_bl_MPRAGE.nii.gz",), spreadsheet=True):
    """A cohort on disk with the phantommem mapping (ADNI layout + ADNIMERGE.csv); empty files."""
    import yaml

    root = tmp_path / "raw"
    for f in files:
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        (root / f).write_bytes(b"")
    if spreadsheet:
        root.mkdir(exist_ok=True)
        (root / "ADNIMERGE.csv").write_text("PTID,VISCODE,AGE\n127_S_0001,bl,70\n")
    cfg = {"results": str(tmp_path / "results"),
           "cohorts": {"real": {"mapping": "config/cohorts/phantommem.yaml", "root": str(root)}}}
    (tmp_path / "real.yaml").write_text(yaml.safe_dump(cfg))
    return str(tmp_path / "real.yaml"), root


def test_a_cohort_that_would_run_over_nothing_stops_before_any_job(tmp_path):
    import shutil

    config, root = _real_cohort(tmp_path)
    out = _snakemake(tmp_path, configfiles=(config,))  # the control: a root with a T1 and its spreadsheet
    assert out.returncode == 0 and _job_counts(out.stdout)["preprocess_session"] == 1, out.stderr[-2000:]
    mri = "ADNI/127_S_0001/bl/127_S_0001_bl_MPRAGE.nii.gz"
    cases = {  # name: (damage to the root, the line printed after "<config>: cohorts.real")
        "missing root": (shutil.rmtree, ".root: {root} does not exist (or is not a folder); point it at the "
                         "cohort's download or set cohorts.real.enabled: false"),
        "no scan file": (lambda r: shutil.rmtree(r / "ADNI"),
                         ": no file under {root} matches the scan pattern "
                         "'ADNI/{{subject}}/{{session}}/{{subject}}_{{session}}_{{modality}}.nii.gz' of "
                         "config/cohorts/phantommem.yaml"),
        "no spreadsheet": (lambda r: (r / "ADNIMERGE.csv").unlink(),
                           ": none of the clinical spreadsheets of config/cohorts/phantommem.yaml is under {root} "
                           "(looked for ADNIMERGE.csv)"),
        "no T1": (lambda r: (r / mri).rename(r / mri.replace("MPRAGE", "FLAIR")),
                  ": 1 scans under {root} but no T1 in any session (found FLAIR); each session's other modalities "
                  "are registered through its T1"),
    }
    for name, (damage, line) in cases.items():
        config, root = _real_cohort(tmp_path / name.replace(" ", "_"))
        damage(root)
        out = _snakemake(tmp_path, configfiles=(config,))
        expected = f"{config}: cohorts.real" + line.format(root=root)
        assert out.returncode == 1 and _error_lines(out) == [expected], (name, out.stdout[-2000:], out.stderr[-2000:])


def test_a_missing_mapping_file_is_one_line_naming_the_key(tmp_path):
    import yaml

    config, _ = _real_cohort(tmp_path)
    cfg = yaml.safe_load(Path(config).read_text())
    cfg["cohorts"]["real"]["mapping"] = str(tmp_path / "nope.yaml")
    Path(config).write_text(yaml.safe_dump(cfg))
    out = _snakemake(tmp_path, configfiles=(config,))
    assert out.returncode == 1
    assert _error_lines(out) == [f"{config}: cohorts.real.mapping: cannot read {tmp_path}/nope.yaml: "
                                 "No such file or directory"]


# --- shell injection: config paths and wildcards reach every job's shell line quoted ------------

# $(...), backticks, ; && |, both quotes and a space, each trying to create a canary file
HOSTILE = "a b'c\"d $(touch$IFS{c}1) `touch {c}2`;touch {c}3&&touch {c}4|touch {c}5"
FAKE_CLI = '''#!{python}
# records its argv (one JSON line) instead of running: the test checks what the shell passed
import json, os, sys
with open(os.environ["BRAING3N_ARGV_LOG"], "a") as fh:
    fh.write(json.dumps([os.path.basename(sys.argv[0]), *sys.argv[1:]]) + "\\n")
sys.exit(1 if "train" in sys.argv[1:] else 0)  # a failed training run: its log is copied aside
'''


def _hostile_setup(tmp_path, external=False):
    """A config whose every path key lies under a folder named HOSTILE; (config file, that folder, canary)."""
    import shutil

    import yaml

    canary = tmp_path / "canary"
    evil = tmp_path / HOSTILE.format(c=canary)
    (evil / "maps").mkdir(parents=True)
    shutil.copy(REPO / "config" / "cohorts" / "phantommem.yaml", evil / "maps" / "phantommem.yaml")
    shutil.copy(REPO / "config" / "probes.yaml", evil / "probes.yaml")
    bad = evil / "raw" / "bad"  # a real cohort whose one T1 is not a NIfTI: its session fails fast
    (bad / "ADNI" / "941_S_9999" / "bl").mkdir(parents=True)
    (bad / "ADNI" / "941_S_9999" / "bl" / "941_S_9999_bl_MPRAGE.nii.gz").write_bytes(b"not a NIfTI file")
    (bad / "ADNIMERGE.csv").write_text("PTID,VISCODE,AGE,PTGENDER,DX\n941_S_9999,bl,71,Male,CN\n")
    tiny = {"preset": "tiny", "steps": 1, "batch_size": 1, "ckpt_every": 1, "log_every": 1}
    cfg = {
        "results": str(evil / "results"), "device": "cpu",
        "cohorts": {
            "ph": {"mapping": str(evil / "maps" / "phantommem.yaml"), "root": str(evil / "data" / "ph"),
                   "phantom": {"style": "adni", "n_subjects": 2, "n_sites": 1, "modalities": {"T1": 1.0},
                               "voxel_sizes": {"2": 1.0}}},
            "bad": {"mapping": str(evil / "maps" / "phantommem.yaml"), "root": str(bad)},
        },
        "preprocess": {"threads": 1, "hdbet": {"mode": "fast", "device": "cpu"}},
        "metadata": {"val_fraction": 0.0, "test_fraction": 0.0},
        "train": {"engine": {"num_workers": 0, "bf16": False, "warmup_steps": 0, "ema_decay": 0.0},
                  "mae": tiny, "decoder": {**tiny, "eval_max_scans": 1, "eval_nifti": 0, "eval_batch_size": 1},
                  "dit": {**tiny, "patch": 2}, "dit_long": {**tiny, "patch": 2},
                  "aekl": {k: v for k, v in tiny.items() if k != "preset"}},
        "generate": {"n": 1, "steps": 1, "arms": {"HC": {"disease": "HC"}}},
        "evaluate": {"probes_panel": str(evil / "probes.yaml"), "n_splits": 2, "n_boot": 2,
                     "tokenizers": {"bottlenecks": [8]}, "baselines": ["random_vit", "aekl"]},
        "report": {"needs": ["tables/probes_mae.csv"]},
    }
    if external:  # models trained elsewhere and a user-supplied encoder checkpoint, at hostile paths
        for key in ("model_dir", "long_model_dir", "tokenizer_dir"):
            (evil / key).mkdir()
            (evil / key / "final.safetensors").write_bytes(b"")
            cfg["generate"][key] = str(evil / key)
        (evil / "mae").mkdir()
        (evil / "mae" / "final.safetensors").write_bytes(b"")
        cfg["train"]["decoder"]["mae_dir"] = str(evil / "mae")
        (evil / "medicalnet.pth").write_bytes(b"")
        cfg["evaluate"]["encoders"] = {"medicalnet": {"weights": str(evil / "medicalnet.pth")}}
        cfg["evaluate"]["baselines"] = ["random_vit", "medicalnet"]
        del cfg["report"]
    path = tmp_path / ("external.yaml" if external else "hostile.yaml")
    path.write_text(yaml.safe_dump(cfg))
    return path, evil, canary


def _canaries(canary):
    return sorted(p.name for p in canary.parent.glob(canary.name + "*"))


def test_every_rules_shell_line_passes_hostile_paths_literally(tmp_path):
    """Each job's shell line of the whole DAG (both model-folder setups), run by bash with a recording
    `braing3n` / `python`: nothing in a path executes, every path argument arrives whole."""
    import json
    import os
    import shlex

    fake = tmp_path / "fakebin"
    fake.mkdir()
    for name in ("braing3n", "python"):
        (fake / name).write_text(FAKE_CLI.format(python=sys.executable))
        (fake / name).chmod(0o755)
    env = dict(os.environ, PATH=f"{fake}{os.pathsep}{os.environ['PATH']}", BRAING3N_ARGV_LOG=str(tmp_path / "argv"))
    rules_seen = set()
    for external in (False, True):
        config, evil, canary = _hostile_setup(tmp_path / f"ext{int(external)}", external)
        out = subprocess.run([SNAKEMAKE, "all", "-n", "-p", "--cores", "1", "--configfile", str(config)],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        text = out.stdout + out.stderr
        commands = [c for c in re.findall(r"^Shell command: (.*)$", text, re.M) if c != "None"]  # None: rule all
        rules = re.findall(r"^\s*rule (\w+):$", text, re.M)
        rules_seen |= set(rules)
        assert len(commands) == len([r for r in rules if r != "all"]) > 20
        (tmp_path / "argv").unlink(missing_ok=True)
        for cmd in commands:
            words = shlex.split(cmd)  # an unquoted quote in a path would make this fail or split it
            for i, w in enumerate(words[:-1]):
                if w == ">":  # the log / overlay the shell writes: its folder, as Snakemake would make it
                    Path(words[i + 1]).parent.mkdir(parents=True, exist_ok=True)
            res = subprocess.run(["bash", "-c", cmd], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
            assert res.stderr == "", (cmd, res.stderr)
            for i, w in enumerate(words[:-1]):
                if w == ">":
                    assert Path(words[i + 1]).is_file(), (cmd, words[i + 1])  # the literal path was written
        assert _canaries(canary) == []
        calls = [json.loads(line) for line in (tmp_path / "argv").read_text().splitlines()]
        assert len(calls) == len(commands)
        marker = f"touch$IFS{canary}1"
        for argv in calls:
            holding = [a for a in argv if "touch" in a]
            assert holding and all(str(evil) in a for a in holding), argv  # whole, never cut at a space or ;
            configfile = argv[argv.index("--configfile") + 1]
            assert marker in configfile and Path(configfile).is_file()
        # a failed training run's log was copied aside under its literal (hostile) name
        assert list((evil / "results" / "logs").glob("train_dit.log.failed-*"))
    all_rules = {r for rule_file in STAGE_RULES.values() for r in rule_file} | {"embed_baseline"}
    assert all_rules - {"phantom_phantommem", "phantom_phantomonc"} <= rules_seen | {"all"}
    assert "phantom_ph" in rules_seen


def test_a_newline_in_a_path_key_stops_with_one_line_naming_it(tmp_path):
    import yaml

    config, evil, canary = _hostile_setup(tmp_path)
    cfg = yaml.safe_load(config.read_text())
    for key, setter in {"results": lambda c: c.update(results=str(evil / "r\ntouch x")),
                        "cohorts.bad.root": lambda c: c["cohorts"]["bad"].update(root=str(evil / "raw\nbad"))}.items():
        bad = yaml.safe_load(yaml.safe_dump(cfg))
        setter(bad)
        config.write_text(yaml.safe_dump(bad))
        out = subprocess.run([SNAKEMAKE, "all", "-n", "--cores", "1", "--configfile", str(config)],
                             cwd=REPO, capture_output=True, text=True, timeout=300)
        lines = _error_lines(out)
        assert out.returncode == 1 and len(lines) == 1, (key, lines)
        assert lines[0].startswith(f"{config}: invalid config at '{key}': ") and "holds a control character" in lines[0]
    assert _canaries(canary) == []


@pytest.mark.slow
def test_real_jobs_of_every_rule_file_run_with_hostile_paths(tmp_path):
    """Snakemake runs real jobs of each rule file on the hostile config: phantom synthesis, a session
    (its one scan is no NIfTI: a failed record), QC table, harmonise, manifest; then, on an atlas-space
    rendering of the phantom as QC input, store, MAE / decoder / DiT for one step through the launcher,
    export, the MAE probe table and the report. Everything lands at the literal paths, no canary."""
    import yaml

    from braing3n.config import load_config
    from braing3n.paths import Layout
    from braing3n.phantom.atlas_space import write_atlas_space_cohort
    from braing3n.phantom.plan import plan_cohort

    config, evil, canary = _hostile_setup(tmp_path)
    lay = Layout(str(evil / "results"))

    def run(cfg_file, *targets, allowed=()):
        cmd = [SNAKEMAKE, *targets, "--cores", "2", "--configfile", str(cfg_file), "--rerun-triggers", "mtime",
               "input", *(["--allowed-rules", *allowed] if allowed else [])]
        out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1200)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
        return _job_counts(out.stdout + out.stderr)

    counts = run(config, lay.qc_table("bad"), lay.manifest)
    assert counts == {"phantom_ph": 1, "preprocess_session": 1, "qc_table": 1, "harmonise": 2, "manifest": 1}
    qc = pd.read_parquet(lay.qc_table("bad"))
    assert list(qc["status"]) == ["failed"] and "941_S_9999_bl_MPRAGE.nii.gz" in qc["reason"].iloc[0]
    assert _canaries(canary) == []

    # the phantom cohort's scans as the chain delivers them (skips ~2 core-min of N4 + HD-BET + ANTs)
    cfg = yaml.safe_load(config.read_text())
    cfg["cohorts"]["bad"]["enabled"] = False
    config2 = tmp_path / "hostile_ph.yaml"
    config2.write_text(yaml.safe_dump(cfg))
    full = load_config(config2)
    atlas_qc = write_atlas_space_cohort(plan_cohort("ph", full["cohorts"]["ph"], full), evil / "results" / "atlas")
    atlas_qc.to_parquet(lay.qc_table("ph"), index=False)

    report, dit = str(evil / "results" / "report" / "index.html"), f"{lay.model_dir('dit')}/final.safetensors"
    counts = run(config2, report, dit, allowed=("manifest", "store", "train_mae", "train_decoder", "export",
                                                "probes", "train_dit", "report"))
    assert counts == dict.fromkeys(("manifest", "store", "train_mae", "train_decoder", "export", "probes",
                                    "train_dit", "report"), 1)
    assert len(pd.read_parquet(lay.store_index("ph"))) == len(atlas_qc) == 2
    assert np.load(evil / "results" / "embeddings" / "ph.npz")["scan_id"].shape == (2,)
    assert Path(dit).is_file() and Path(lay.table("probes_mae")).is_file()
    assert "probes_mae" in Path(report).read_text()
    assert _canaries(canary) == []


def test_a_cohorts_stripped_sri24_declaration_reaches_the_preprocess_command(tmp_path):
    """`scans.skull_stripped` / `scans.space` of a mapping (per modality too) arrive quoted on the
    session job's command line; a bad value stops the DAG in one line naming the key."""
    import shlex

    import yaml

    root = tmp_path / "raw"
    for mod in ("t1", "flair"):
        (root / "B1").mkdir(parents=True, exist_ok=True)
        (root / "B1" / f"B1_{mod}.nii.gz").write_bytes(b"")
    mapping = {"scans": {"pattern": "{subject}/{subject}_{modality}.nii.gz",
                         "modalities": {"t1": "T1", "flair": "FLAIR"},
                         "skull_stripped": {"T1": True, "FLAIR": False}, "space": "SRI24"},
               "fields": {"diagnosis": {"constant": "GBM"}}}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(mapping))
    cfg = {"results": str(tmp_path / "results"), "cohorts": {"bt": {"mapping": str(tmp_path / "m.yaml"),
                                                                     "root": str(root)}}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    out = subprocess.run([SNAKEMAKE, "all", "-n", "-p", "--cores", "1", "--directory", str(REPO), "--configfile",
                          str(tmp_path / "c.yaml")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    commands = re.findall(r"^Shell command: (.*)$", out.stdout + out.stderr, re.M)
    cmd = next(c for c in commands if " preprocess session" in c)
    words = shlex.split(cmd)
    pairs = [(w, words[i + 1]) for i, w in enumerate(words[:-1]) if w in ("--skull-stripped", "--space", "--raw")]
    assert ("--skull-stripped", "T1=yes") in pairs and ("--skull-stripped", "FLAIR=no") in pairs
    assert ("--space", "T1=SRI24") in pairs and ("--space", "FLAIR=SRI24") in pairs
    assert ("--raw", f"T1={root}/B1/B1_t1.nii.gz") in pairs
    mapping["scans"]["space"] = "MNI"
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(mapping))
    out = subprocess.run([SNAKEMAKE, "all", "-n", "--cores", "1", "--directory", str(REPO), "--configfile",
                          str(tmp_path / "c.yaml")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 1 and "scans.space.T1: expected one of SRI24, native, got 'MNI'" in out.stdout + out.stderr
