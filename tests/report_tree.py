"""A small synthetic results tree with every table and picture the report reads (no model run):
shared by tests/test_report_page.py and tests/test_report_browser.py."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import yaml

from braing3n.paths import Layout, scan_record_name
from braing3n.provenance import write_table

PROV = {"git_commit": "abc123", "config_hash": "cfg0001", "seed": 0}
OK_TASKS = {"sex": "classification", "age": "regression", "cdr_sb": "regression"}
SKIPPED_TASKS = [f"task_{i:02d}" for i in range(12)]
VIEWS, FEATURES = ("T1", "FLAIR", "pooled"), ("mean", "grid", "cls")
# the view x feature where mae scores highest, per task (the report's short table must pick it)
BEST = {"sex": ("pooled", "grid"), "age": ("T1", "grid"), "cdr_sb": ("FLAIR", "mean")}
FAILED, OUTLIER = "c1_s05_1_T1", "c1_s04_1_T1"


def _png(path: Path, shape=(60, 160), value=0.5) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.full(shape, value)
    img[::7] = 1.0
    plt.imsave(path, img, cmap="gray", vmin=0, vmax=1)


def _probes(enc: str, bonus: float) -> pd.DataFrame:
    rows = []
    for t, kind in OK_TASKS.items():
        m = "auroc" if kind == "classification" else "pearson_r"
        for v in VIEWS:
            for f in FEATURES:
                val = 0.6 + bonus + (0.2 if (v, f) == BEST[t] else 0.01 * len(v + f) / 10)
                rows.append({"encoder": enc, "task": t, "kind": kind, "view": v, "feature": f, "n": 40,
                             "status": "ok", "reason": "", m: val, f"{m}_lo": val - 0.1, f"{m}_hi": val + 0.05})
    for t in SKIPPED_TASKS:  # several skipped rows per task: the page must list each task once
        for v in VIEWS:
            rows.append({"encoder": enc, "task": t, "kind": "classification", "view": v, "feature": "mean",
                         "n": 3, "status": "skipped", "reason": f"n=3 < min_n 20 ({v})"})
    return pd.DataFrame(rows)


def make_tree(tmp: Path) -> tuple[Path, Path]:
    """-> (config file, results root)."""
    root = tmp / "results"
    lay = Layout(str(root))
    qc_rows = []
    for i in range(6):
        sid = f"c1_s{i:02d}_1_T1"
        status = "failed" if sid == FAILED else "ok"
        qc_rows.append({"scan_id": sid, "cohort": "c1", "subject": f"s{i:02d}", "session": "1", "modality": "T1",
                        "status": status, "reason": "HD-BET: empty brain mask" if status == "failed" else "",
                        "brain_volume_ml": 1200.0 + (900 if sid == OUTLIER else i), "nmi_atlas": 0.5,
                        "z_brain_volume_ml": 9.0 if sid == OUTLIER else 0.1, "z_nmi_atlas": 0.0,
                        "outlier": sid == OUTLIER, "crash_file": "crash-s05.txt" if status == "failed" else ""})
        folder = Path(lay.scan_dir("c1", f"s{i:02d}", "1"))
        if status == "failed":  # no QC picture (its products are removed); the report draws its raw input
            raw = tmp / "raw" / f"{sid}.nii.gz"
            raw.parent.mkdir(parents=True, exist_ok=True)
            vol = np.zeros((20, 24, 16), np.float32)
            vol[4:16, 5:19, 3:13] = np.arange(12 * 14 * 10, dtype=np.float32).reshape(12, 14, 10)
            nib.save(nib.Nifti1Image(vol, np.eye(4)), raw)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / scan_record_name(f"s{i:02d}", "1", "T1")).write_text(json.dumps(
                {"scan_id": sid, "status": "failed", "input": str(raw), "reason": "HD-BET: empty brain mask"}))
        else:
            _png(folder / scan_record_name(f"s{i:02d}", "1", "T1").replace("_qc.json", "_qc.png"), (90, 240),
                 0.2 + i / 10)
    write_table(pd.DataFrame(qc_rows), root / "qc" / "c1_qc.csv", {**PROV, "n_scans": 6})
    _png(root / "qc" / "c1_qc_montage.png", (120, 300))
    man = pd.DataFrame({"scan_id": [r["scan_id"] for r in qc_rows], "subject_id": [r["subject"] for r in qc_rows],
                        "split": ["train"] * 4 + ["test"] * 2})
    (root / "metadata").mkdir(parents=True)
    man.to_parquet(root / "metadata" / "manifest.parquet", index=False)
    t = root / "tables"
    write_table(_probes("mae", 0.1), t / "probes_mae.csv", PROV)
    write_table(_probes("random_vit", 0.0), t / "probes_random_vit.csv", PROV)
    cmp = [{"task": task, "kind": k, "view": v, "feature": f, "encoder": "mae", "versus": "random_vit", "n": 40,
            "metric": "auroc" if k == "classification" else "mae", "p_value": 0.004, "verdict": "win"}
           for task, k in OK_TASKS.items() for v in VIEWS for f in FEATURES]
    write_table(pd.DataFrame(cmp), t / "encoder_comparison.csv", PROV)
    write_table(pd.DataFrame({"summary": ["mae wins or ties on 3 of 3 tasks (grid features, paired bootstrap 95%)"]}),
                t / "encoder_summary.csv", PROV)
    g = [{"condition": "sex", "column": "sex", "kind": "classification", "n_values": 2, "cfg_scale": s, "n": 32,
          "status": "ok", "reason": "", "accuracy": a, "pearson_r": np.nan}
         for s, a in (("real", 0.95), ("1.0", 0.7), ("4.0", 0.85))]
    g += [{"condition": "age", "column": "age", "kind": "regression", "n_values": 4, "cfg_scale": s, "n": 32,
           "status": "ok", "reason": "", "accuracy": np.nan, "pearson_r": r} for s, r in (("real", 0.9), ("1.0", 0.5))]
    write_table(pd.DataFrame(g), t / "guidance.csv", PROV)
    fid = [{"arm": arm, "comparison": c, "extractor": "braing3n-mae-encoder-mean", "n_a": 8, "n_b": 8,
            "fid": v, "fid_lo": v * 0.8, "fid_hi": v * 1.2, "status": "ok", "reason": ""}
           for arm in ("sex=F", "sex=M") for c, v in (("generated vs real", 30.0), ("generated vs reconstruction", 5.0),
                                                     ("reconstruction vs real", 25.0))]
    write_table(pd.DataFrame(fid), t / "fid.csv", PROV)
    write_table(pd.DataFrame([{"features": "latent grid pooled x2", "fixed": "modality=T1", "n_generated": 48,
                               "n_train": 20, "n_heldout": 8, "median_distance_generated": 3.0,
                               "median_distance_heldout": 2.9, "n_near_copies": 0, "fraction_near_copies": 0.0,
                               "p_generated_closer": 0.6}]), t / "memorisation.csv", PROV)
    # held-out pairs have an r; the in-sample ones all have the same interval, so theirs is NaN
    write_table(pd.DataFrame([{"pairs": "held-out", "n_pairs": 6, "age_change_pearson_r": 0.55,
                               "age_change_slope": 0.8, "mean_latent_mae": 0.3, "mean_latent_mae_no_change": 0.35},
                              {"pairs": "in-sample", "n_pairs": 4, "age_change_pearson_r": np.nan,
                               "age_change_slope": np.nan, "mean_latent_mae": 0.2,
                               "mean_latent_mae_no_change": 0.3}]), t / "longitudinal.csv", PROV)
    years = [1.0, 2.0, 3.0, 1.5, 2.5, 4.0] + [2.0] * 4
    write_table(pd.DataFrame({"subject_id": [f"p{i}" for i in range(10)], "pairs": ["held-out"] * 6 + ["in-sample"] * 4,
                              "years": years, "pred_age_baseline": 60.0,
                              "pred_age_forecast": [60.0 + 0.8 * y + 0.1 * (i % 2) for i, y in enumerate(years)]}),
                t / "longitudinal_pairs.csv", PROV)
    write_table(pd.DataFrame({"metric": ["l1", "psnr", "ssim"], "mean": [0.21, 24.0, 0.81], "std": [0.02, 1.0, 0.03]}),
                t / "reconstruction_summary.csv", PROV)
    write_table(pd.DataFrame({"scanner": ["a"], "n": [6]}), t / "dataset_summary.csv", PROV)
    for name in ("probes", "guidance", "samples_vs_real", "reconstructions"):
        _png(root / "figures" / f"{name}.png", (200, 1600) if name == "samples_vs_real" else (100, 300))
    (root / "models" / "dit").mkdir(parents=True)
    (root / "models" / "dit" / "config.json").write_text(json.dumps({"task": "dit", "train": {"steps": 3000}}))
    pd.DataFrame({"step": [100, 3000], "loss": [1.0, 0.25]}).to_csv(root / "models" / "dit" / "metrics.csv",
                                                                      index=False)
    (root / "logs").mkdir()
    (root / "logs" / "phantom.log").write_text("x\n")
    cfg = {"results": str(root), "seed": 0, "cohorts": {"c1": {"mapping": "x.yaml", "root": "x"}},
           "evaluate": {"baselines": ["random_vit"]}}
    (tmp / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    return tmp / "cfg.yaml", root
