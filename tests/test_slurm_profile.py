"""profiles/slurm: site settings from the environment, GPU rules on the GPU partition, memory that
grows with the attempt, grouped preprocessing; checked through snakemake's own profile parser and a
dry run of a small workflow that uses the pipeline's rule names."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

from dag_script import dag_script
from snakemake.profiles import ProfileConfigFileParser

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "profiles" / "slurm" / "config.yaml"
GPU_TRAINING = ["train_mae", "train_decoder", "train_dit", "train_dit_long", "train_aekl"]
GPU_INFERENCE = ["export", "reconstruct", "generate_arm", "forecast_demo", "embed_baseline", "guidance", "fid",
                 "longitudinal", "tokenizers"]
CPU_RULES = ["preprocess_session", "qc_table", "harmonise", "manifest", "store"]
SITE_ENV = {"BRAING3N_SLURM_ACCOUNT": "proj42", "BRAING3N_SLURM_PARTITION": "cpu",
            "BRAING3N_SLURM_GPU_PARTITION": "gpu", "BRAING3N_SLURM_GPU_MODEL": "a100", "BRAING3N_SLURM_GPUS": "4"}


def parse_profile(monkeypatch, env: dict[str, str]) -> dict:
    for k in list(os.environ):
        if k.startswith("BRAING3N_SLURM_"):
            monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with open(PROFILE) as fh:
        return dict(ProfileConfigFileParser().parse(fh))


def kv(items: list[str]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in items)


def set_resources(parsed: dict) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for item in parsed["set-resources"]:
        rule_res, value = item.split("=", 1)
        rule, res = rule_res.split(":", 1)
        out.setdefault(rule, {})[res] = value
    return out


def test_general_keys(monkeypatch):
    p = parse_profile(monkeypatch, {})
    assert p["executor"] == "slurm"
    assert int(p["jobs"]) == 100 and int(p["retries"]) >= 1 and int(p["latency-wait"]) >= 30
    assert p["keep-going"] == "True" and p["rerun-incomplete"] == "True"
    assert p["slurm-logdir"].startswith("logs/")
    assert p["rerun-triggers"] == ["mtime", "params", "input"]
    assert int(parse_profile(monkeypatch, {"BRAING3N_SLURM_JOBS": "7"})["jobs"]) == 7


def test_account_and_partition_come_from_the_environment(monkeypatch):
    unset = kv(parse_profile(monkeypatch, {})["default-resources"])
    assert "slurm_account" not in unset and "slurm_partition" not in unset  # the plugin's/cluster's defaults
    assert unset["disk_mb"] == "10000"  # constant: the default would stat every input file
    site = parse_profile(monkeypatch, SITE_ENV)
    default = kv(site["default-resources"])
    assert eval(default["slurm_account"]) == "proj42" and eval(default["slurm_partition"]) == "cpu"
    res = set_resources(site)
    for rule in GPU_TRAINING:
        r = res[rule]
        assert eval(r["slurm_partition"]) == "gpu" and r["gpu"] == "4" and eval(r["gpu_model"]) == "a100"
        assert r["tasks_per_gpu"] == "0" and r["cpus_per_task"] == "32"
        assert int(r["runtime"]) == 1440
    for rule in GPU_INFERENCE:
        assert eval(res[rule]["slurm_partition"]) == "gpu" and res[rule]["gpu"] == "1"
    for rule in CPU_RULES:  # CPU rules keep the default (CPU) partition and ask for no GPU
        assert "slurm_partition" not in res.get(rule, {}) and "gpu" not in res.get(rule, {})
    # without a GPU partition set, GPU jobs fall back to the CPU partition the user named
    fallback = set_resources(parse_profile(monkeypatch, {"BRAING3N_SLURM_PARTITION": "shared"}))
    assert eval(fallback["train_mae"]["slurm_partition"]) == "shared" and fallback["train_mae"]["gpu"] == "1"


def test_memory_and_runtime_grow_with_attempt(monkeypatch):
    p = parse_profile(monkeypatch, SITE_ENV)
    res = set_resources(p)
    for rule in ["harmonise", "store", "export"]:  # preprocess_session: in its rule (test below)
        assert eval(res[rule]["mem_mb"], {"attempt": 2}) == 2 * eval(res[rule]["mem_mb"], {"attempt": 1})
    assert eval(res["train_mae"]["mem_mb"], {"attempt": 1}) == 4 * 32000
    assert eval(kv(p["default-resources"])["mem_mb"], {"attempt": 3}) == 3 * eval(
        kv(p["default-resources"])["mem_mb"], {"attempt": 1})


def test_preprocess_group_keeps_submissions_under_a_thousand(monkeypatch):
    p = parse_profile(monkeypatch, {})
    components = int(kv(p["group-components"])["preprocess"])
    sessions = 22_998  # the DAG benchmark's 35,309-scan setup (braing3n bench dag)
    assert math.ceil(sessions / components) <= 1000
    threads = kv(p["set-threads"])
    # a group runs its members one after another, so each member may use all `cores`
    assert int(threads["preprocess_session"]) == int(p["cores"])


TOY = '''
SESSIONS = ["s1", "s2", "s3"]
rule all:
    input: expand("qc/{s}_T1.json", s=SESSIONS), expand("qc/{s}_FLAIR.json", s=SESSIONS), "m/final.safetensors"
rule preprocess_session:
    output: "qc/{s}_T1.json"
    group: "preprocess"
    shell: "touch {output}"
rule flair:
    input: "qc/{s}_T1.json"
    output: "qc/{s}_FLAIR.json"
    group: "preprocess"
    shell: "touch {output}"
rule train_mae:
    input: expand("qc/{s}_T1.json", s=SESSIONS)
    output: "m/final.safetensors"
    threads: 8
    resources: gpu=1, mem_mb=1000
    shell: "touch {output}"
'''


def test_dry_run_groups_sessions_and_routes_gpu_job(tmp_path):
    (tmp_path / "Snakefile").write_text(TOY)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRAING3N_SLURM_")} | SITE_ENV
    snakemake = Path(sys.executable).with_name("snakemake")
    res = subprocess.run([str(snakemake), "--profile", str(PROFILE.parent), "-n"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert out.count("Group job preprocess") == 1  # 3 sessions x 2 scans -> one submission
    blocks = {b.split(":", 1)[0].strip(): b for b in out.split("rule ")[1:]}
    t1 = blocks["preprocess_session"]
    assert "threads: 4" in t1 and "slurm_partition=cpu" in t1 and "gpu=" not in t1 and "disk_mb=10000" in t1
    mae = blocks["train_mae"]
    for token in ("slurm_partition=gpu", "gpu=4", "gpu_model=a100", "cpus_per_task=32", "mem_mb=128000",
                  "slurm_account=proj42", "runtime=1440"):
        assert token in mae, (token, mae)



RESOURCES_AT_ATTEMPT = dag_script("""
out = {}
for job in workflow.dag.jobs:
    if job.rule.name == "preprocess_session":
        res = [job.rule.expand_resources(job.wildcards, job.input, attempt=a) for a in (1, 2)]
        out[job.wildcards.session + "_" + job.wildcards.subject + "_" + job.wildcards.cohort] = [
            len([f for f in job.input if "/raw/" in f]), *[[r["mem_mb"], r["runtime"]] for r in res]]
print(json.dumps(out))
""")


def test_real_preprocess_jobs_one_per_session_sized_by_scans_and_growing_with_attempt(tmp_path):
    """The real workflow on a small synthetic setup: one job per session, 40 per group, each with
    6000 MB and 8 min for the T1 + 5 per other scan, both doubled on the second attempt."""
    import json

    from braing3n.bench.dag import CohortShape, synth_scans, write_setup

    shapes = (CohortShape("mono", 30, ("T1",), 0.5, (2, 2)), CohortShape("onc", 20, ("T1", "T1c", "T2", "FLAIR")),
              CohortShape("plain", 10, ("T1",)))  # synth_scans tops up the total with the last T1-only cohort
    scans = synth_scans(110, seed=3, shapes=shapes)
    config = write_setup(scans, tmp_path)
    sessions = scans[["cohort", "subject", "session"]].drop_duplicates()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRAING3N_SLURM_")} | SITE_ENV
    snakemake = Path(sys.executable).with_name("snakemake")
    res = subprocess.run([str(snakemake), "--profile", str(PROFILE.parent), "--configfile", str(config), "-n",
                          "all"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert out.count("rule preprocess_session:") == len(sessions) < len(scans)
    assert out.count("Group job preprocess") == math.ceil(len(sessions) / 40)
    script = tmp_path / "resources_at_attempt.py"
    script.write_text(RESOURCES_AT_ATTEMPT)
    res = subprocess.run([sys.executable, str(script), str(REPO / "Snakefile"), str(REPO), str(config)], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    jobs = json.loads(res.stdout.strip().splitlines()[-1])
    assert len(jobs) == len(sessions)
    for n_scans, first, second in jobs.values():
        assert first == [6000, 8 + 5 * (n_scans - 1)] and second == [12000, 2 * first[1]]
    assert {n for n, _, _ in jobs.values()} == {1, 4}
