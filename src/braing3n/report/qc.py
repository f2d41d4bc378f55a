"""The report's quality-control section, after MRIQC's group report: counts per cohort, the
montage of each cohort, the outlier table with each outlier's QC picture, every failed scan with
its reason (and its QC picture or crash file where the preprocessing left one)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from braing3n.report.html import esc, full_table, img, table
from braing3n.report.tree import Tree

OUTLIER_SHOWN = ("scan_id", "modality", "brain_volume_ml", "z_brain_volume_ml", "nmi_atlas", "z_nmi_atlas",
                 "ncc_atlas")
MAX_PICTURES = 24  # per-scan QC pictures embedded per kind (failed, outlier); the table lists them all


def _flag(df: pd.DataFrame, column: str) -> pd.Series:
    if column not in df:
        return pd.Series(False, index=df.index)
    return df[column].astype(str).str.lower().isin(["true", "1"])


def cohort_counts(tables: dict[str, tuple[pd.DataFrame, dict]]) -> pd.DataFrame:
    rows = []
    for cohort, (df, _) in tables.items():
        status = df["status"].astype(str) if "status" in df else pd.Series("", index=df.index)
        ok = df[status == "ok"]
        row = {"cohort": cohort, "scans": len(df), "ok": int(len(ok)), "failed": int((status == "failed").sum()),
               "outliers": int(_flag(df, "outlier").sum())}
        if "modality" in df:
            row["modalities"] = " ".join(f"{m}:{n}" for m, n in sorted(df["modality"].value_counts().items()))
        if "subject" in df:
            row["subjects"] = int(df["subject"].nunique())
        for col in ("brain_volume_ml", "ncc_atlas", "dice_atlas_mask"):
            if col in ok and len(ok):
                row[f"median {col}"] = float(pd.to_numeric(ok[col], errors="coerce").median())
        rows.append(row)
    return pd.DataFrame(rows)


def _crash_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if "crash" in c.lower()]


def qc_section(tree: Tree, rel_root: str, max_rows: int) -> str:
    tables = tree.qc_tables()
    if not tables:
        return ""
    parts = [table(cohort_counts(tables))]
    montages = [(c, tree.montage(c)) for c in tables]
    figs = "".join(img(p, f"{c}: mid-axial slice of every ok scan (outliers titled red)") for c, p in montages if p)
    if figs:
        parts.insert(0, f"<div class='grid'>{figs}</div>")
    for cohort, (df, prov) in tables.items():
        parts.append(f"<h3 id='qc-{esc(cohort)}'>{esc(cohort)}</h3>")
        out = df[_flag(df, "outlier")]
        if len(out):
            cols = [c for c in OUTLIER_SHOWN if c in out]
            parts.append(f"<p>{len(out)} outlier(s): robust z of brain volume or atlas similarity beyond the "
                         f"threshold</p>{table(out[cols])}")
            parts.append(_pictures(tree, out, "outlier"))
        failed = df[df["status"].astype(str) == "failed"] if "status" in df else df.iloc[:0]
        if len(failed):
            cols = [c for c in ("scan_id", "modality", "reason", *_crash_columns(failed)) if c in failed]
            parts.append(f"<p>{len(failed)} failed scan(s), each with its reason:</p>{table(failed[cols])}")
            parts.append(_pictures(tree, failed, "failed"))
        if not len(out) and not len(failed):
            parts.append("<p class='note'>no failed scan, no outlier</p>")
        parts.append(full_table(f"{cohort}_qc", df, prov, f"{rel_root}/qc", max_rows))
    return "".join(parts)


def input_png(path: Path) -> bytes | None:
    """Three mid-slices of a raw input scan (voxel axes, 1st-99.5th percentile of its nonzero voxels)
    as PNG bytes: the picture of a failed scan, whose preprocessing left no QC picture. None when
    the file gives no 3D image to draw (the reason the scan failed is then all there is)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import nibabel as nib

    try:
        image = nib.load(str(path))
        if len(image.shape) < 3 or min(image.shape[:3]) < 2:
            return None
        # a 4D series: only its first volume is read (the proxy slices lazily)
        data = np.asanyarray(image.dataobj[(slice(None),) * 3 + (0,) * (len(image.shape) - 3)])
    except Exception:  # any unreadable input (truncated, not NIfTI): the failure reason says why
        return None
    if data.dtype.names:  # an RGB image: its first channel
        data = data[data.dtype.names[0]]
    data = np.nan_to_num(np.abs(data) if np.iscomplexobj(data) else data.astype(float))
    nz = data[data != 0]
    lo, hi = (np.percentile(nz, (1, 99.5)) if nz.size else (0.0, 1.0))
    fig, axes = plt.subplots(1, 3, figsize=(6, 2.2), facecolor="black")
    for ax, axis in zip(axes, (2, 1, 0), strict=True):
        ax.imshow(np.rot90(np.take(data, data.shape[axis] // 2, axis=axis)), cmap="gray", vmin=lo,
                  vmax=hi if hi > lo else lo + 1, interpolation="nearest")
        ax.set_axis_off()
    fig.subplots_adjust(0.005, 0.005, 0.995, 0.995, 0.02)
    buf = io.BytesIO()
    fig.savefig(buf, dpi=80, facecolor="black", format="png", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _pictures(tree: Tree, rows: pd.DataFrame, kind: str) -> str:
    """The QC picture of each scan; for a failed scan (no QC picture: its products are removed) the
    raw input's mid-slices, where the input still gives an image."""
    figs = []
    for _, row in rows.head(MAX_PICTURES).iterrows():
        path = tree.scan_png(row)
        if path is not None:
            figs.append(img(path, f"{kind}: {row['scan_id']}"))
            continue
        raw = tree.scan_input(row) if kind == "failed" else None
        png = input_png(raw) if raw is not None else None
        if png is not None:
            figs.append(img(png, f"{kind}: {row['scan_id']}, the raw input (mid-slices, voxel axes): "
                                 f"{row.get('reason', '')}", alt=f"{kind}: {row['scan_id']}"))
    if not figs:
        return ""
    more = f" (first {MAX_PICTURES} of {len(rows)})" if len(rows) > MAX_PICTURES else ""
    return f"<details open><summary>QC pictures of the {kind} scans{more}</summary><div class='grid'>" \
           f"{''.join(figs)}</div></details>"
