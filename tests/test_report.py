"""`braing3n evaluate probes|compare` and `braing3n report` end to end on a synthetic results tree:
planted effects recovered above the random floor, byte-identical tables on rerun, --where."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from braing3n.evaluate.cli import main as evaluate_main
from braing3n.provenance import read_parquet_provenance, read_table
from braing3n.report import main as report_main

REPO = Path(__file__).resolve().parents[1]


def _results(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(36):
        sex, age, cdr_sb = "FM"[i % 2], float(rng.uniform(20, 85)), float(rng.integers(0, 19)) / 2
        for mod in ("T1", "FLAIR"):
            rows.append({"cohort": "c1", "subject_id": f"s{i:02d}", "session_id": "1", "scan_id": f"c1_s{i:02d}_{mod}",
                         "modality": mod, "sex": sex, "age": age, "cdr_sb": cdr_sb, "diagnosis": "HC",
                         "split": "train" if i < 28 else "test"})
    man = pd.DataFrame(rows)
    root = tmp_path / "results"
    (root / "metadata").mkdir(parents=True)
    man.to_parquet(root / "metadata" / "manifest.parquet", index=False)
    n = len(man)
    signal = np.c_[3.0 * (man["sex"] == "M"), (man["age"] - 50) / 8, man["cdr_sb"] - 4.5]
    mae = np.c_[signal + rng.normal(0, 0.7, (n, 3)), rng.normal(size=(n, 5))]
    (root / "embeddings" / "random_vit").mkdir(parents=True)
    np.savez(root / "embeddings" / "c1.npz", scan_id=man["scan_id"].to_numpy(str), cls=mae[:, ::-1], mean=mae)
    floor = rng.normal(size=(n, 8))
    np.savez(root / "embeddings" / "random_vit" / "c1.npz", scan_id=man["scan_id"].to_numpy(str), cls=floor, mean=floor)
    cfg = {"results": str(root), "seed": 0, "cohorts": {"c1": {"mapping": "x.yaml", "root": "x"}},
           "evaluate": {"n_boot": 200,  # a win at p < 0.05 / 3 needs B > 119 resamples ((0 + 1) / (B + 1), two-sided)
                         "n_splits": 3, "probes_panel": str(REPO / "config" / "probes.yaml")}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    return root


def _run_eval(tmp_path: Path, root: Path) -> None:
    cfg = ["--configfile", str(tmp_path / "cfg.yaml")]
    for enc, emb in (("mae", root / "embeddings" / "c1.npz"), ("random_vit", root / "embeddings/random_vit/c1.npz")):
        assert evaluate_main(["probes", *cfg, "--encoder", enc, "--embeddings", str(emb),
                              "--out", str(root / f"tables/probes_{enc}.csv"),
                              "--predictions", str(root / f"tables/probe_predictions_{enc}.parquet")]) == 0
    assert evaluate_main(["compare", *cfg, "--predictions", *map(str, sorted(root.glob("tables/*.parquet"))),
                          "--probe-tables", str(root / "tables/probes_mae.csv"),
                          str(root / "tables/probes_random_vit.csv"),
                          "--out", str(root / "tables/encoder_comparison.csv"),
                          "--summary", str(root / "tables/encoder_summary.csv"),
                          "--figure", str(root / "figures/probes.png")]) == 0


@pytest.mark.slow
def test_probes_compare_report_end_to_end_and_byte_identical(tmp_path, capsys):
    root = _results(tmp_path)
    _run_eval(tmp_path, root)
    probes = read_table(root / "tables/probes_mae.csv")[0]
    assert len(probes[probes.status == "skipped"]) > 10  # tasks without data are listed with a reason
    assert "# provenance: " in (root / "tables/probes_mae.csv").read_text()
    assert (root / "tables/probes_mae.md").exists()
    pred_prov = read_parquet_provenance(root / "tables/probe_predictions_mae.parquet")
    assert pred_prov == read_table(root / "tables/probes_mae.csv")[1] and pred_prov["n_scans"] > 0
    summary = read_table(root / "tables/encoder_summary.csv")[0]["summary"].iloc[0]
    assert summary.startswith("mae wins or ties on 5 of 5 tasks")  # sex, age, brain_age_hc, cdr_sb, modality
    first = {p.name: p.read_bytes() for p in sorted((root / "tables").glob("*.csv"))}
    _run_eval(tmp_path, root)
    second = {p.name: p.read_bytes() for p in sorted((root / "tables").glob("*.csv"))}
    assert first == second and len(first) == 4

    out = root / "report" / "index.html"
    assert report_main(["--configfile", str(tmp_path / "cfg.yaml"), "--out", str(out)]) == 0
    page = out.read_text()
    assert "Honest check" in page and "data:image/png;base64" in page and "probes_mae" in page
    check, prov = read_table(root / "report" / "honest_check.csv")
    assert prov["n_checks"] == 4 and prov["config_hash"] != "none" and "torch=" in prov["packages"]
    assert check["passed"].all() and len(check) == 4, check.to_string()  # sex, age, cdr_sb, "beats the floor"
    assert check["detail"].str.contains("paired bootstrap vs random_vit on (?:auroc|mae): win").sum() == 3
    assert check["value"].iloc[3] == 3.0  # wins on all three planted effects, each at p < 0.05 / 3
    # leftovers of an earlier config (an encoder no longer compared, a removed cohort's QC) stay out
    (root / "tables" / "probes_brainiac.csv").write_bytes((root / "tables" / "probes_mae.csv").read_bytes())
    (root / "qc").mkdir()
    (root / "qc" / "gone_qc.csv").write_bytes((root / "tables" / "probes_mae.csv").read_bytes())
    assert report_main(["--configfile", str(tmp_path / "cfg.yaml"), "--out", str(out)]) == 0
    assert out.read_text() == page and "probes_brainiac" not in page and "gone_qc" not in page
    (root / "tables" / "probes_brainiac.csv").unlink()
    again = out.read_bytes()
    assert report_main(["--configfile", str(tmp_path / "cfg.yaml"), "--out", str(out)]) == 0
    assert out.read_bytes() == again
    capsys.readouterr()
    assert report_main(["--where", "--configfile", str(tmp_path / "cfg.yaml")]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "4 CSV" in printed


def test_table_round_trip_keeps_values_holding_a_hash(tmp_path):
    from braing3n.provenance import write_table

    df = pd.DataFrame({"task": ["dx #2", "sex"], "auroc": [0.9, 0.75], "note": ["", "a#b"]})
    write_table(df, tmp_path / "t.csv", {"git_commit": "x", "n_scans": 2})
    back, prov = read_table(tmp_path / "t.csv")
    assert back["task"].tolist() == ["dx #2", "sex"] and back["auroc"].tolist() == [0.9, 0.75]
    assert back["note"].iloc[1] == "a#b" and prov == {"git_commit": "x", "n_scans": 2}
    write_table(df.iloc[:0], tmp_path / "empty.csv", {"git_commit": "x"})
    assert read_table(tmp_path / "empty.csv")[0].columns.tolist() == ["task", "auroc", "note"]

def test_missing_manifest_is_a_one_line_error(tmp_path, capsys):
    root = _results(tmp_path)
    (root / "metadata" / "manifest.parquet").unlink()
    rc = evaluate_main(["probes", "--configfile", str(tmp_path / "cfg.yaml"), "--encoder", "mae", "--embeddings",
                        str(root / "embeddings" / "c1.npz"), "--out", str(root / "t.csv"), "--predictions",
                        str(root / "p.parquet")])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "manifest.parquet: manifest missing" in err and "\n" not in err
    assert not (root / "t.csv").exists()


def _guidance(path: Path, hits: int, n: int, r: float, n_age: int, real_accuracy: float = 1.0) -> None:
    from braing3n.provenance import write_table

    rows = [{"condition": "sex", "column": "sex", "kind": "classification", "n_values": 2, "cfg_scale": s, "n": n,
             "status": "ok", "accuracy": (hits if s == 4.0 else n // 2) / n, "pearson_r": np.nan} for s in (1.0, 4.0)]
    rows += [{"condition": "age", "column": "age", "kind": "regression", "n_values": 4, "cfg_scale": s, "n": n_age,
              "status": "ok", "accuracy": np.nan, "pearson_r": r if s == 1.0 else 0.0} for s in (1.0, 4.0)]
    rows.append({"condition": "sex", "column": "sex", "kind": "classification", "n_values": 2, "cfg_scale": "real",
                 "n": 40, "status": "ok", "accuracy": real_accuracy, "pearson_r": np.nan, "real_counts": "F:20 M:20"})
    write_table(pd.DataFrame(rows), path, {"git_commit": "x"})


def test_guidance_checks_need_significance_not_just_above_chance(tmp_path):
    from braing3n.evaluate.honest_check import honest_check

    # 13/16 at p=0.5: binomial p=0.011 < 0.05/2 scales; r=0.6 on 16 samples: p=0.007
    _guidance(tmp_path / "guidance.csv", hits=13, n=16, r=0.6, n_age=16)
    check = honest_check(tmp_path).set_index("check")
    assert len(check) == 2 and check["passed"].all(), check.to_string()
    assert check.filter(like="sex", axis=0)["value"].iloc[0] == 13 / 16
    assert "cfg scale 4.0" in check.filter(like="sex", axis=0)["detail"].iloc[0]
    # 10/16 (binomial p=0.23) and r=0.3 on 16 samples (p=0.13) are above chance but not evidence
    _guidance(tmp_path / "guidance.csv", hits=10, n=16, r=0.3, n_age=16)
    check = honest_check(tmp_path)
    assert len(check) == 2 and not check["passed"].any(), check.to_string()
    sex = check[check["check"].str.contains("sex")]["detail"].iloc[0]
    assert "judge on real scans: accuracy 1.00 (n=40, F:20 M:20)" in sex and "not above chance" not in sex
    # a judge at chance on the real scans (11/20 with 2 values) is named as the reason
    _guidance(tmp_path / "guidance.csv", hits=10, n=16, r=0.3, n_age=16, real_accuracy=0.55)
    sex = honest_check(tmp_path).set_index("check").filter(like="sex", axis=0)["detail"].iloc[0]
    assert "accuracy 0.55 (n=40, F:20 M:20) - the judge itself is not above chance" in sex


def test_demo_run_recovers_the_known_effects():
    """On `make demo` output (skipped when absent): every row of the honest check passes except,
    possibly, "MAE beats its untrained twin": on the CPU demo that row moves with the training run
    (14 subjects, make demo on 2026-11-28: CDR-SB win at p = 0.004, tie at p = 0.078, win at
    p = 0.008 on three runs; a tie with 28 subjects), so it is read, not asserted, here. The
    demo-sized chain of tests/test_demo_learning.py keeps it as a strict expected failure, issue #7
    (docs/evaluate.md#honest-check-demo)."""
    path = REPO / "results" / "demo" / "report" / "honest_check.csv"
    if not path.exists():
        pytest.skip(f"{path} absent: run `make demo` first")
    check = read_table(path)[0]
    win = check["check"].str.startswith("mae beats")
    assert len(check) == 7 and win.sum() == 1, check.to_string()
    assert check.loc[~win, "passed"].all(), check.to_string()
    row = check[win].iloc[0]  # the row says what it found either way, and agrees with itself
    assert (": win p=" in row["detail"]) == bool(row["passed"]) == (row["value"] >= 1), row["detail"]


def test_honest_check_reads_grid_features_only_when_both_encoders_have_them():
    from braing3n.evaluate.honest_check import _check_feature

    both = pd.DataFrame({"encoder": ["mae", "mae", "random_vit", "random_vit"], "feature": ["mean", "grid"] * 2})
    assert _check_feature(both, ("mae", "random_vit")) == "grid"
    assert _check_feature(both.iloc[:3], ("mae", "random_vit")) == "mean"  # the floor lacks the grid


def _probe_tables(root: Path, p_values: dict) -> None:
    """probes_{mae,random_vit}.csv and encoder_comparison.csv for the three known effects (T1, grid)."""
    from braing3n.provenance import write_table

    metric = {"sex": "auroc", "age": "pearson_r", "cdr_sb": "pearson_r"}
    for enc, value in (("mae", 0.9), ("random_vit", 0.6)):
        rows = [{"encoder": enc, "task": t, "status": "ok", "feature": "grid", "view": "T1", m: value,
                 f"{m}_lo": value - 0.1, f"{m}_hi": value + 0.05} for t, m in metric.items()]
        write_table(pd.DataFrame(rows), root / f"probes_{enc}.csv", {"git_commit": "x"})
    cmp = [{"task": t, "versus": "random_vit", "view": "T1", "feature": "grid", "metric": metric[t], "p_value": p,
            "verdict": "win" if p < 0.05 else "tie"} for t, p in p_values.items()]
    write_table(pd.DataFrame(cmp), root / "encoder_comparison.csv", {"git_commit": "x"})


def test_a_win_over_the_floor_must_survive_the_correction_for_three_effects(tmp_path):
    from braing3n.evaluate.honest_check import honest_check

    # p = 0.03 is a 95% win on its own, but not at 0.05 / 3 effects
    _probe_tables(tmp_path, {"sex": 1.0, "age": 0.03, "cdr_sb": 0.2})
    check = honest_check(tmp_path).set_index("check")
    assert len(check) == 4 and check["passed"].iloc[:3].all(), check.to_string()
    beats = check.loc["mae beats random_vit on at least one known effect"]
    assert not beats["passed"] and beats["value"] == 0 and "p < 0.0167" in beats["detail"]
    # the row says plainly that on CPU it is not expected to pass and which run decides it
    assert "on CPU this row is not expected to pass" in beats["detail"] and "`make gpu-check-demo`" in beats["detail"]
    _probe_tables(tmp_path, {"sex": 1.0, "age": 0.03, "cdr_sb": 0.01})
    beats = honest_check(tmp_path).set_index("check").loc["mae beats random_vit on at least one known effect"]
    assert beats["passed"] and beats["value"] == 1 and "cdr_sb: win p=0.01" in beats["detail"]
    # a comparison table written before the p-value column: a win cannot count, and the row says why
    cmp = read_table(tmp_path / "encoder_comparison.csv")[0].drop(columns="p_value")
    cmp.to_csv(tmp_path / "encoder_comparison.csv", index=False)
    beats = honest_check(tmp_path).set_index("check").loc["mae beats random_vit on at least one known effect"]
    assert not beats["passed"] and "p_value missing" in beats["detail"]
    # a known effect whose probe was skipped fails its row instead of vanishing from the check
    _probe_tables(tmp_path, {"sex": 1.0, "age": 0.03})
    probes = read_table(tmp_path / "probes_mae.csv")[0]
    probes.loc[probes["task"] == "cdr_sb", "status"] = "skipped"
    probes.to_csv(tmp_path / "probes_mae.csv", index=False)
    check = honest_check(tmp_path)
    skipped = check[check["check"].str.startswith("cdr_sb")]
    assert len(skipped) == 1 and not skipped["passed"].iloc[0] and "skipped" in skipped["detail"].iloc[0]
