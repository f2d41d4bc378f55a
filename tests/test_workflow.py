"""The Snakemake DAG of the demo: every stage is there, in one dry run, on a fresh clone."""

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))

STAGE_RULES = {
    "phantom": ["phantom_phantommem", "phantom_phantomonc"],
    "preprocess": ["preprocess_session", "qc_table"],
    "metadata": ["harmonise", "manifest"],
    "tokenizer": ["store", "train_mae", "train_decoder", "export", "reconstruct"],
    "generator": ["train_dit", "train_dit_long", "generate_arm", "forecast_demo"],
    "evaluate": ["probes", "compare_encoders", "fid", "guidance", "memorisation", "longitudinal", "tokenizers",
                 "train_aekl"],
    "report": ["report"],
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
