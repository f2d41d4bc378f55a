"""The demo's honest check on a demo-sized run that CI can afford.

Same cohorts, seeds, model sizes, step counts and evaluation settings as `make demo`
(config/demo.yaml), every stage through the `braing3n` CLI in its own process as Snakemake runs
it, except the per-scan image chain: the phantom scans are rendered directly as the chain should
deliver them (SRI24 grid, skull-stripped, no bias; braing3n.phantom.atlas_space), which saves the
~50 core-minutes of N4 + HD-BET + ANTs that the real demo spends. The decoder is trained for two
steps only: the honest check reads the frozen encoder's embeddings and the DiT's latents, never
the decoder's output. The full chain, preprocessing included, is `make demo`
(tests/test_report.py::test_demo_run_recovers_the_known_effects checks its report).

It takes ~19 min on two free cores, so it is opt-in: `make test-demo` (BRAING3N_DEMO_TEST=1).
`make test-demo OVERLAY=config/demo_gpu.yaml` (BRAING3N_DEMO_OVERLAY) merges a config overlay over
the demo's, e.g. the GPU one with a ViT-B MAE, as `make gpu-check-demo` runs it on one GPU: that
run decides the MAE-win row: asserted when the MAE trains on a GPU, a strict expected failure on
CPU, where it is not expected to pass - read the printed table.
"""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from braing3n.config import load_configs
from braing3n.evaluate.honest_check import honest_check
from braing3n.paths import Layout
from braing3n.phantom.atlas_space import write_atlas_space_cohort
from braing3n.phantom.generate import write_tables
from braing3n.phantom.plan import plan_cohort

REPO = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("BRAING3N_DEMO_TEST") != "1",
                       reason="demo-sized learning chain (~19 min): run `make test-demo` (BRAING3N_DEMO_TEST=1)"),
]


def _run(*args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "braing3n", *args], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, f"braing3n {' '.join(args)} failed:\n{proc.stderr[-3000:]}"


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """Run the demo-sized chain once; (results folder, honest-check table)."""
    tmp_path = tmp_path_factory.mktemp("demo_learning")
    overlays = [str(REPO / p) for p in os.environ.get("BRAING3N_DEMO_OVERLAY", "").split()]
    cfg = load_configs([str(REPO / "config" / "demo.yaml"), *overlays])
    workers = min(os.cpu_count() or 2, 8)
    cfg["results"] = str(tmp_path / "results")
    for name, spec in cfg["cohorts"].items():
        spec["root"] = str(tmp_path / "data" / name)
        spec["mapping"] = str(REPO / spec["mapping"])
    cfg["evaluate"]["probes_panel"] = str(REPO / cfg["evaluate"].get("probes_panel", "config/probes.yaml"))
    cfg["train"]["decoder"].update(steps=2, ckpt_every=2, eval_max_scans=1, eval_nifti=0)
    conf = tmp_path / "config.yaml"
    conf.write_text(yaml.safe_dump(cfg))
    c = ["--configfile", str(conf)]
    lay = Layout(cfg["results"])

    n_scans = 0
    for name, spec in cfg["cohorts"].items():
        plan = plan_cohort(name, spec, cfg)
        write_tables(plan, cfg)  # the clinical spreadsheet harmonise reads
        for scan in plan.scans:  # harmonise discovers scans by path; the images come from the atlas render
            Path(scan.path).parent.mkdir(parents=True, exist_ok=True)
            Path(scan.path).touch()
        qc = write_atlas_space_cohort(plan, tmp_path / "atlas" / name, workers=workers)
        Path(lay.qc_table(name)).parent.mkdir(parents=True, exist_ok=True)
        qc.to_parquet(lay.qc_table(name), index=False)
        n_scans += len(qc)
        _run("harmonise", *c, "--cohort", name, "--out", lay.metadata_partition(name),
             "--issues", str(tmp_path / "results" / "metadata" / "issues" / f"{name}.csv"))
    assert n_scans == 55  # 23 phantommem + 32 phantomonc, as in the demo
    parts = [lay.metadata_partition(n) for n in cfg["cohorts"]]
    _run("manifest", *c, "--partitions", *parts, "--manifest", lay.manifest, "--pairs", lay.pairs,
         "--summary", lay.table("dataset_summary"), "--coverage", lay.table("dataset_coverage"))
    for name in cfg["cohorts"]:
        _run("store", *c, "--cohort", name, "--qc", lay.qc_table(name), "--metadata", lay.metadata_partition(name),
             "--workers", str(workers), "--out", str(Path(cfg["results"]) / "store" / name / "index.parquet"))
    _run("train", "mae", *c, "--out", lay.model_dir("mae"))
    _run("train", "decoder", *c, "--out", lay.model_dir("decoder"))
    tables = Path(cfg["results"]) / "tables"
    for name in cfg["cohorts"]:
        _run("export", *c, "--cohort", name, "--model-dir", lay.model_dir("decoder"),
             "--out", str(Path(cfg["results"]) / "embeddings" / f"{name}.npz"))
        _run("evaluate", "embed", *c, "--encoder", "random_vit", "--cohort", name,
             "--out", str(Path(cfg["results"]) / "embeddings" / "random_vit" / f"{name}.npz"))
    for enc, folder in (("mae", ""), ("random_vit", "random_vit")):
        emb = [str(Path(cfg["results"]) / "embeddings" / folder / f"{n}.npz") for n in cfg["cohorts"]]
        _run("evaluate", "probes", *c, "--encoder", enc, "--embeddings", *emb,
             "--out", str(tables / f"probes_{enc}.csv"),
             "--predictions", str(tables / f"probe_predictions_{enc}.parquet"))
    _run("evaluate", "compare", *c, "--reference", "mae",
         "--predictions", str(tables / "probe_predictions_mae.parquet"),
         str(tables / "probe_predictions_random_vit.parquet"),
         "--probe-tables", str(tables / "probes_mae.csv"), str(tables / "probes_random_vit.csv"),
         "--out", str(tables / "encoder_comparison.csv"), "--summary", str(tables / "encoder_summary.csv"),
         "--figure", str(tmp_path / "probes.png"))
    _run("train", "dit", *c, "--out", lay.model_dir("dit"))
    _run("evaluate", "guidance", *c, "--out", str(tables / "guidance.csv"), "--figure", str(tmp_path / "g.png"),
         "--samples", str(tmp_path / "guidance_samples.npz"), "--mosaic", str(tmp_path / "mosaic.png"))

    check = honest_check(tables)
    print(check.to_string())
    return Path(cfg["results"]), check


def _row(check: pd.DataFrame, prefix: str) -> pd.Series:
    hit = check[check["check"].str.startswith(prefix)]
    assert len(hit) == 1, check.to_string()
    return hit.iloc[0]


def test_chain_keeps_subjects_on_one_side_and_checks_every_effect(chain):
    results, check = chain
    manifest = pd.read_parquet(results / "metadata" / "manifest.parquet")
    assert len(manifest) == 55 and (manifest.groupby("subject_id")["split"].nunique() == 1).all()
    assert len(check) == 7  # sex, age, disease severity, "wins on one", and the three guided conditions


def test_probes_recover_sex_age_and_severity_above_chance_without_losing_to_the_floor(chain):
    _, check = chain
    for prefix in ("sex auroc", "age pearson_r", "cdr_sb pearson_r"):
        row = _row(check, prefix)
        assert row["passed"], row["detail"]


# Measured here on 2026-11-28 (6ca9c89; MAE 1,000 steps): the MAE ties its untrained twin on all three
# planted effects read from atlas renders (sex AUROC 1.00 vs 1.00; age r 0.70 vs 0.56, p = 0.40; CDR-SB
# r 0.44 vs 0.42, p = 0.89); samples follow age (r 0.86), disease (41/48) and sex (32/32). The full
# `make demo` (preprocessed scans) wins on CDR-SB on some trainings and ties on others (p = 0.004, 0.078,
# 0.008 from scratch), and ties with 28 memory-clinic subjects instead of 14 (CDR-SB r 0.54 vs 0.58,
# p = 0.62; age 0.81 vs 0.77, p = 0.17): not yet the stable win this row asks for.
def _mae_trains_on_gpu() -> bool:
    overlays = [str(REPO / p) for p in os.environ.get("BRAING3N_DEMO_OVERLAY", "").split()]
    device = load_configs([str(REPO / "config" / "demo.yaml"), *overlays]).get("device", "auto")
    import torch

    return device != "cpu" and torch.cuda.is_available()


CPU_WIN_REASON = ("known limitation (issue #7), not a fault of your install: on CPU this row is not expected to pass - "
                  "the demo's tiny MAE (1,000 steps) reads the planted effects about as well as its untrained twin; "
                  "every other check of this run must pass. The run that decides it is `make gpu-check-demo` (this "
                  "chain with config/demo_gpu.yaml on one GPU), where the row is asserted")


def test_mae_beats_the_random_floor_on_a_planted_effect(chain, request):
    """A strict expected failure only while its reason holds (the MAE trained on CPU); on a GPU it must win."""
    if not _mae_trains_on_gpu():
        request.applymarker(pytest.mark.xfail(strict=True, reason=CPU_WIN_REASON))
    row = _row(chain[1], "mae beats random_vit")
    assert row["passed"], row["detail"]


@pytest.mark.parametrize("condition", ["age", "disease", "sex"])
def test_generated_samples_follow_the_requested_condition(chain, condition):
    row = _row(chain[1], f"generated samples follow requested {condition}")
    assert "not above chance" not in row["detail"], row["detail"]  # the judging probe reads real scans
    assert row["passed"], f"{row['value']:.3f} vs chance {row['reference']:.3f}: {row['detail']}"
