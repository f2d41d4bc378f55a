"""`braing3n store`: write one cohort's model-input store, incrementally.

Input: the cohort's QC table (``status`` ok|failed, ``scan_id``, ``volume``: the atlas-space NIfTI;
``outlier`` scans are dropped only with ``store.exclude_outliers``)
and optionally its metadata partition (adds ``subject_id``). Output, in the index's folder:
``{scan_id}.npy`` (float16, 160x192x160, C order, read with ``np.load(mmap_mode='r')``) and
``index.parquet``: scan_id, cohort, subject_id, path (relative to the index folder), shape,
dtype, scale, stats over nonzero (brain) voxels, source path/mtime/size, status, reason.

Values are the preprocessed intensities (negatives clipped) times ``scale`` (a power of two,
1 unless the scan's max exceeds the float16 range): the loader's per-volume z-score makes the
scale irrelevant to the model. Scans whose source is unchanged (path, size, mtime) are kept;
others are rewritten; .npy files of scans no longer in the table are removed.
"""

from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from braing3n.atlas import SHAPE as ATLAS_SHAPE
from braing3n.atlas import to_lps_grid
from braing3n.data.geometry import MODEL_SHAPE, crop_to_model
from braing3n.provenance import write_parquet

# QC-table column holding the atlas-space volume, first match wins (the preprocess stage names it).
PATH_COLUMNS = ("volume", "atlas_path", "output", "image", "path")
FP16_SAFE = 32768.0  # keep values well below float16's max (65504)


def _qc_path_column(qc: pd.DataFrame, source: str) -> str:
    for col in PATH_COLUMNS:
        if col in qc.columns:
            return col
    raise ValueError(f"{source}: QC table has no volume path column (expected one of {list(PATH_COLUMNS)})")


def volume_stats(vol: np.ndarray) -> dict:
    """Stats over nonzero voxels (the brain after skull stripping; background is 0)."""
    brain = vol[vol > 0]
    if brain.size == 0:
        raise ValueError("empty volume (no voxel > 0 inside the 160x192x160 crop)")
    return {"mean": float(brain.mean()), "std": float(brain.std()), "p99": float(np.percentile(brain, 99)),
            "max": float(brain.max()), "n_brain": int(brain.size)}


def _atomic_npy(arr: np.ndarray, path: Path) -> None:
    tmp = path.with_name(".tmp." + path.name)
    with open(tmp, "wb") as fh:
        np.save(fh, arr)
    tmp.replace(path)


# integer index columns (-1 for a failed scan; ns mtimes need int64)
INT_COLUMNS = ("source_mtime", "source_size", "n_brain", "n_brain_outside_crop")


def convert_scan(source: str, dest: str) -> dict:
    """Atlas-space NIfTI -> cropped float16 .npy; returns the index fields (raises ValueError naming the file)."""
    try:
        img = nib.load(source)
        data = to_lps_grid(img) if img.shape[:3] == ATLAS_SHAPE else None
    except (OSError, EOFError, ValueError) as exc:
        raise ValueError(f"{source}: cannot read atlas-space volume ({exc})") from exc
    if data is None:
        raise ValueError(f"{source}: shape {img.shape} is not the SRI24 grid {ATLAS_SHAPE}")
    data = np.asarray(data, dtype=np.float32)
    vol = np.clip(crop_to_model(data), 0, None)
    if not np.isfinite(vol).all():
        raise ValueError(f"{source}: NaN/Inf voxels")
    # brain voxels the 160x192x160 model crop cuts off (a head registered off-centre or larger than
    # SRI24's brain): recorded per scan, so a user can see which scans the models see in part
    outside = int((data > 0).sum() - (vol > 0).sum())
    try:
        stats = volume_stats(vol)
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from exc
    scale = 1.0
    while stats["max"] * scale > FP16_SAFE:
        scale /= 2
    _atomic_npy((vol * scale).astype(np.float16), Path(dest))
    st = os.stat(source)
    return {**stats, "n_brain_outside_crop": outside, "scale": scale, "source_mtime": st.st_mtime_ns,
            "source_size": st.st_size}


def _convert_row(args: tuple[str, str]) -> tuple[dict | None, str]:
    source, dest = args
    try:
        return convert_scan(source, dest), ""
    except ValueError as exc:
        return None, str(exc)


def _unchanged(old: pd.Series, source: str, npy: Path) -> bool:
    try:
        st = os.stat(source)
    except OSError:
        return False
    return (old["status"] == "ok" and npy.exists() and old["source"] == source
            and int(old["source_mtime"]) == st.st_mtime_ns and int(old["source_size"]) == st.st_size)


def build_store(qc_table: str | Path, index_path: str | Path, cohort: str, metadata: str | Path | None = None,
                workers: int = 1, provenance: dict | None = None, exclude_outliers: bool = False) -> pd.DataFrame:
    """Write/refresh the store of one cohort; returns the index (also written to ``index_path``)."""
    qc_table, index_path = Path(qc_table), Path(index_path)
    qc = pd.read_parquet(qc_table)
    for col in ("scan_id", "status"):
        if col not in qc.columns:
            raise ValueError(f"{qc_table}: QC table lacks column {col!r}")
    path_col = _qc_path_column(qc, str(qc_table))
    subjects = {}
    if metadata is not None:
        meta = pd.read_parquet(metadata, columns=["scan_id", "subject_id"])
        subjects = dict(zip(meta.scan_id, meta.subject_id, strict=True))
    store_dir = index_path.parent
    store_dir.mkdir(parents=True, exist_ok=True)
    old = pd.read_parquet(index_path).set_index("scan_id") if index_path.exists() else pd.DataFrame()

    rows, todo = [], []
    for rec in qc.itertuples(index=False):
        sid, source = str(rec.scan_id), str(getattr(rec, path_col))
        base = {"scan_id": sid, "cohort": cohort, "subject_id": subjects.get(sid, ""), "path": f"{sid}.npy",
                "shape": list(MODEL_SHAPE), "dtype": "float16", "source": source,
                "source_mtime": -1, "source_size": -1, "n_brain": -1, "n_brain_outside_crop": -1}  # ints, never NaN
        if rec.status != "ok":
            rows.append({**base, "status": "failed", "reason": f"preprocessing QC status {rec.status!r}"})
        elif exclude_outliers and bool(getattr(rec, "outlier", False)):
            rows.append({**base, "status": "failed", "reason": "QC outlier (store.exclude_outliers)"})
        elif sid in old.index and _unchanged(old.loc[sid], source, store_dir / base["path"]):
            prev = old.loc[sid]
            rows.append({**base, **{k: prev[k] for k in old.columns
                                   if k not in base or k in INT_COLUMNS}})
        else:
            todo.append(base)
    jobs = [(b["source"], str(store_dir / b["path"])) for b in todo]
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_convert_row, jobs, chunksize=4))
    else:
        results = [_convert_row(j) for j in jobs]
    for base, (fields, err) in zip(todo, results, strict=True):
        if fields is None:
            print(f"store: {err}", file=sys.stderr)
            (store_dir / base["path"]).unlink(missing_ok=True)
            rows.append({**base, "status": "failed", "reason": err})
        else:
            rows.append({**base, **fields, "status": "ok", "reason": ""})
    index = pd.DataFrame(rows).sort_values("scan_id").reset_index(drop=True)
    for col in INT_COLUMNS:
        index[col] = index[col].astype(np.int64)
    keep = set(index.loc[index.status == "ok", "path"])
    for f in store_dir.glob("*.npy"):
        if f.name not in keep:
            f.unlink()
    write_parquet(index, index_path, provenance or {})
    return index


def read_index(paths: list[str | Path] | str | Path, ok_only: bool = True) -> pd.DataFrame:
    """Concatenate store indexes; ``path`` becomes absolute. Only usable (status ok) scans by default."""
    paths = [paths] if isinstance(paths, str | Path) else list(paths)
    frames = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise FileNotFoundError(f"{p}: store index not found (run `braing3n store` for this cohort)")
        df = pd.read_parquet(p)
        df["path"] = [str((p.parent / f).resolve()) for f in df["path"]]
        frames.append(df)
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if ok_only and len(out):
        out = out[out.status == "ok"].reset_index(drop=True)
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="braing3n store", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configfile", action="append", required=True)
    p.add_argument("--cohort", required=True)
    p.add_argument("--out", required=True, help="{results}/store/{cohort}/index.parquet")
    p.add_argument("--qc", default=None, help="QC table (default: the Layout path of the cohort)")
    p.add_argument("--metadata", default=None, help="metadata partition (default: the Layout path, if present)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: store.workers)")
    args = p.parse_args(argv)
    from braing3n.config import load_configs
    from braing3n.paths import Layout
    from braing3n.provenance import provenance

    config = load_configs(args.configfile)
    layout = Layout(config["results"])
    qc = args.qc or layout.qc_table(args.cohort)
    meta = args.metadata or layout.metadata_partition(args.cohort)
    meta = meta if Path(meta).exists() else None
    workers = args.workers or config.get("store", {}).get("workers", 1)
    try:
        index = build_store(qc, args.out, args.cohort, meta, workers, provenance(config),
                            exclude_outliers=config.get("store", {}).get("exclude_outliers", False))
    except (ValueError, FileNotFoundError) as exc:
        print(f"braing3n store: {exc}", file=sys.stderr)
        return 1
    n_ok = int((index.status == "ok").sum())
    print(f"store {args.cohort}: {n_ok} volumes ok, {len(index) - n_ok} failed -> {args.out}")
    return 0
