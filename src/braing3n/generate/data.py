"""Training data for the generators: tokenizer latents joined to the manifest (and pairs table).

Latents come from the tokenizer export, ``{results}/embeddings/{cohort}.npz`` (scan_id,
latent [N, 1200, 32]); conditions and the split from ``{results}/metadata/manifest.parquet``.
Only rows whose split is in ``train_splits`` are used, and the latent normalisation statistics
and condition vocabulary are computed from exactly those rows.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from braing3n.paths import Layout

# pairs.parquet (metadata stage): one row per (subject, baseline session, follow-up session) with
# interval_years and, per modality m, baseline_scan_id_{m} / followup_scan_id_{m}
MODALITIES = ("T1", "T2", "FLAIR", "T1c")


def embeddings_paths(config: dict) -> list[Path]:
    lay = Layout(config.get("results", "results"))
    cohorts = [c for c, spec in config["cohorts"].items() if spec.get("enabled", True)]
    return [lay.path("embeddings", f"{c}.npz") for c in cohorts]


def load_latents(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """(scan_id [N] str, latent [N, T, C] float32) concatenated over cohort files."""
    ids, lats = [], []
    for p in paths:
        if not Path(p).exists():
            raise FileNotFoundError(f"{p}: latent export missing; run `braing3n export` (tokenizer stage) first")
        with np.load(p, allow_pickle=False) as z:
            if "scan_id" not in z or "latent" not in z:
                raise ValueError(f"{p}: expected arrays 'scan_id' and 'latent', found {sorted(z.files)}")
            ids.append(z["scan_id"].astype(str))
            lats.append(z["latent"].astype(np.float32))
    if not ids:
        raise ValueError("no latent files given")
    return np.concatenate(ids), np.concatenate(lats)


def read_manifest(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: manifest missing; run the metadata stage (`braing3n manifest`) first")
    df = pd.read_parquet(path)
    for col in ("scan_id", "split"):
        if col not in df:
            raise ValueError(f"{path}: manifest has no column {col!r} (columns: {list(df.columns)})")
    df["scan_id"] = df["scan_id"].astype(str)
    return df


@dataclass
class LatentSet:
    rows: pd.DataFrame  # manifest rows aligned with latents
    latents: np.ndarray  # [N, T, C] float32, raw (not normalised)


def join_latents(manifest: pd.DataFrame, scan_ids: np.ndarray, latents: np.ndarray,
                 splits: list[str] | None) -> LatentSet:
    """Manifest rows with a latent (in the requested splits), in manifest order."""
    pos = {s: i for i, s in enumerate(scan_ids)}
    rows = manifest if splits is None else manifest[manifest["split"].astype(str).isin(splits)]
    have = rows["scan_id"].map(pos)
    missing = int(have.isna().sum())
    if missing:
        print(f"generate.data: {missing} manifest scan(s) have no latent (failed QC or not exported); skipped",
              file=sys.stderr)
    rows = rows[have.notna()].reset_index(drop=True)
    idx = have.dropna().astype(int).to_numpy()
    if len(rows) == 0:
        raise ValueError(f"no scans with latents in splits {splits}; check the manifest 'split' column")
    return LatentSet(rows=rows, latents=latents[idx])


def long_pairs(pairs: pd.DataFrame, source: str = "pairs") -> pd.DataFrame:
    """Wide pairs table -> one row per modality present at both sessions:
    baseline_scan_id, followup_scan_id, years."""
    need = ["interval_years"] + [f"{w}_scan_id_{m}" for m in MODALITIES for w in ("baseline", "followup")]
    missing = [c for c in need if c not in pairs]
    if missing:
        raise ValueError(f"{source}: pairs table lacks columns {missing}")
    parts = []
    for m in MODALITIES:
        part = pd.DataFrame({"baseline_scan_id": pairs[f"baseline_scan_id_{m}"],
                             "followup_scan_id": pairs[f"followup_scan_id_{m}"],
                             "years": pd.to_numeric(pairs["interval_years"], errors="coerce")})
        parts.append(part.dropna())
    return pd.concat(parts, ignore_index=True).astype({"baseline_scan_id": str, "followup_scan_id": str})


@dataclass
class PairSet:
    rows: pd.DataFrame  # baseline manifest rows + 'years'
    baseline: np.ndarray  # [P, T, C]
    followup: np.ndarray  # [P, T, C]


def join_pairs(pairs: pd.DataFrame, manifest: pd.DataFrame, scan_ids: np.ndarray, latents: np.ndarray,
               splits: list[str] | None, source: str = "pairs") -> PairSet:
    """Within-subject (baseline, follow-up) latent pairs whose baseline is in ``splits``;
    conditions (age, diagnosis, sex, modality) are the baseline scan's manifest row."""
    pl = long_pairs(pairs, source)
    pos = {s: i for i, s in enumerate(scan_ids)}
    meta = manifest.set_index("scan_id")
    keep = pl[pl.baseline_scan_id.isin(pos) & pl.followup_scan_id.isin(pos) & pl.baseline_scan_id.isin(meta.index)]
    if splits is not None:
        keep = keep[meta.loc[keep.baseline_scan_id, "split"].astype(str).isin(splits).to_numpy()]
    if len(keep) == 0:
        raise ValueError(f"{source}: no longitudinal pair has both latents in splits {splits}")
    rows = meta.loc[keep.baseline_scan_id].reset_index()
    rows["years"] = keep["years"].to_numpy(dtype=np.float32)
    rows["followup_scan_id"] = keep["followup_scan_id"].to_numpy()
    bi = np.array([pos[s] for s in keep.baseline_scan_id])
    fi = np.array([pos[s] for s in keep.followup_scan_id])
    return PairSet(rows=rows, baseline=latents[bi], followup=latents[fi])
