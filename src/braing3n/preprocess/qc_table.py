"""`braing3n qc-table`: a cohort's scan records -> QC table (Parquet + CSV/MD) + montage PNG.

`--records` takes scan records (`*_qc.json`) or session records (`*_session.json`, what the
workflow passes: each lists its scans' records, which sit beside it).

Each row also says which path the scan took (`input_route`: raw|stripped + native|sri24, and
`input_route_why`) and holds the numbers behind each stage's check (preprocess/checks.py).

Outliers: robust z = 0.6745 (x - median) / MAD of brain volume and of atlas similarity, over the
cohort's successful scans; |z| > preprocess.robust_z (3.5) is flagged. Failed scans are listed
with their reasons (status "failed", `reason`) and, for an internal error, `crash_file` (the
traceback beside the scan record).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from braing3n.paths import SESSION_RECORD_SUFFIX

QC_KEYS = ["brain_volume_ml", "ncc_atlas", "nmi_atlas", "dice_atlas_mask", "nmi_t1_before", "nmi_t1_after"]
# the numbers behind each stage's plausibility check (preprocess/checks.py)
CHECK_KEYS = ["head_volume_ml", "brain_head_fraction", "mask_zero_fraction", "mask_pieces", "mask_edge_fraction",
              "support_largest_share"]
ROUTE_KEYS = ["input_route", "input_route_why", "tissue_edge_fraction"]  # the path each scan took, and why
COLUMNS = ["scan_id", "cohort", "subject", "session", "modality", "status", "reason", "crash_file", "hdbet",
           *ROUTE_KEYS, *QC_KEYS, *CHECK_KEYS, "reg_scale_min", "reg_scale_max", "reg_shear_max",
           "runtime_total_s", "volume", "brain_mask"]
OUTLIER_COLUMNS = ("brain_volume_ml", "nmi_atlas")


def robust_z(x: pd.Series) -> pd.Series:
    """0.6745 (x - median) / MAD; 0 where the MAD is 0 (all equal) or the value is missing."""
    med = x.median()
    mad = (x - med).abs().median()
    if not np.isfinite(mad) or mad == 0:
        return pd.Series(0.0, index=x.index)
    return (0.6745 * (x - med) / mad).fillna(0.0)


def _load(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: unreadable {what} ({exc})") from exc


def scan_record_paths(paths: list[str]) -> list[Path]:
    """Scan records named directly or through session records (`{"scans": [{"record": name}, ...]}`)."""
    out = []
    for p in map(Path, paths):
        if p.name.endswith(SESSION_RECORD_SUFFIX):
            out.extend(p.parent / scan["record"] for scan in _load(p, "session record").get("scans", []))
        else:
            out.append(p)
    return out


def _registration_numbers(q: dict) -> dict:
    """The affine's per-axis scale range and largest |shear| (T1 records; NaN elsewhere)."""
    scale, shear = q.get("reg_scale"), q.get("reg_shear")
    return {"reg_scale_min": min(scale) if scale else np.nan, "reg_scale_max": max(scale) if scale else np.nan,
            "reg_shear_max": max(abs(x) for x in shear) if shear else np.nan}


def read_records(paths: list[str]) -> pd.DataFrame:
    rows = []
    for p in scan_record_paths(paths):
        rec = _load(p, "scan record")
        q, out = rec.get("qc") or {}, rec.get("outputs") or {}
        rows.append({"scan_id": rec["scan_id"], "cohort": rec["cohort"], "subject": rec["subject"],
                     "session": rec["session"], "modality": rec["modality"], "status": rec["status"],
                     "reason": rec.get("reason", ""), "hdbet": rec.get("hdbet", ""),
                     # an internal error's traceback (preprocess/faults.py), beside the record
                     "crash_file": str(Path(p).parent / rec["crash_file"]) if rec.get("crash_file") else "",
                     **{k: rec.get(k) if k != "tissue_edge_fraction" else rec.get(k, np.nan) for k in ROUTE_KEYS},
                     **{k: q.get(k, np.nan) for k in QC_KEYS + CHECK_KEYS},
                     **_registration_numbers(q),
                     "runtime_total_s": (rec.get("runtime_s") or {}).get("total", np.nan),
                     "volume": str(Path(p).parent / out["volume"]) if "volume" in out else "",
                     "brain_mask": str(Path(p).parent / out["brain_mask"]) if "brain_mask" in out else ""})
    return pd.DataFrame(rows, columns=COLUMNS).sort_values("scan_id").reset_index(drop=True)


def flag_outliers(df: pd.DataFrame, threshold: float = 3.5) -> pd.DataFrame:
    """Add z_* and `outlier` columns; z is computed per modality over status == ok."""
    df = df.copy()
    ok = df["status"] == "ok"
    for col in OUTLIER_COLUMNS:
        z = pd.Series(np.nan, index=df.index)
        for _, idx in df[ok].groupby("modality").groups.items():
            z.loc[idx] = robust_z(df.loc[idx, col].astype(float))
        df[f"z_{col}"] = z
    df["outlier"] = ok & (df[[f"z_{c}" for c in OUTLIER_COLUMNS]].abs() > threshold).any(axis=1)
    return df


def montage(df: pd.DataFrame, path: str, max_scans: int = 48) -> None:
    """Mid-axial atlas-space slice of each successful scan; outliers titled in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import nibabel as nib

    ok = df[df["status"] == "ok"].head(max_scans)
    n = max(len(ok), 1)
    cols = min(8, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.9 * rows), facecolor="black", squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (_, r) in zip(axes.ravel()[: len(ok)], ok.iterrows(), strict=True):
        vol = np.asanyarray(nib.load(r["volume"]).dataobj)
        sl = np.rot90(vol[:, :, vol.shape[2] // 2 + 10])
        ax.imshow(sl, cmap="gray", vmin=0, vmax=float(np.percentile(vol[vol > 0], 99.5)) if (vol > 0).any() else 1)
        ax.set_title(f"{r['subject']} {r['modality']}", fontsize=6, color="red" if r["outlier"] else "white")
    n_failed = int((df["status"] == "failed").sum())
    fig.suptitle(f"{df['cohort'].iloc[0] if len(df) else ''}: {len(ok)} ok shown, {n_failed} failed, "
                 f"{int(df['outlier'].sum())} outliers (red)", color="white", fontsize=8)
    fig.savefig(path, dpi=90, facecolor="black", format="png")
    plt.close(fig)


def build_table(records: list[str], out: str, config: dict | None = None, threshold: float = 3.5) -> pd.DataFrame:
    from braing3n.provenance import provenance, write_parquet, write_table

    df = flag_outliers(read_records(records), threshold)
    prov = provenance(config, scans=len(df), failed=int((df["status"] == "failed").sum()),
                      outliers=int(df["outlier"].sum()))
    out_path = Path(out)
    table = df.copy()
    table.attrs = {}
    write_parquet(table, out_path, prov)
    write_table(df, out_path.with_suffix(".csv"), prov)
    montage(df, str(out_path.with_name(out_path.stem + "_montage.png")))
    return df


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="braing3n qc-table", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", nargs="+", required=True,
                   help="scan or session records (*_qc.json, *_session.json) of one cohort")
    p.add_argument("--out", required=True, help="Parquet path; CSV, MD and _montage.png are written next to it")
    p.add_argument("--cohort", default=None, help="cohort name (checked against the records)")
    p.add_argument("--configfile", action="append", default=[])
    args = p.parse_args(argv)
    from braing3n.preprocess.cli import load_pipeline_config

    config = load_pipeline_config(args.configfile)
    df = build_table(args.records, args.out, config, config.get("preprocess", {}).get("robust_z", 3.5))
    if args.cohort and len(df) and set(df["cohort"]) != {args.cohort}:
        print(f"braing3n qc-table: records belong to {sorted(set(df['cohort']))}, not {args.cohort}", file=sys.stderr)
        return 1
    for _, r in df[df["status"] == "failed"].iterrows():
        crash = f" (traceback: {r['crash_file']})" if r["crash_file"] else ""
        print(f"failed: {r['scan_id']}: {r['reason']}{crash}")
    print(f"braing3n qc-table: {len(df)} scans, {int((df['status'] == 'failed').sum())} failed, "
          f"{int(df['outlier'].sum())} outliers -> {args.out}")
    return 0
