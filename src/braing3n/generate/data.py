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

# pairs.parquet columns (metadata stage); the first present name is used
PAIR_COLUMNS = {
    "baseline": ("baseline_scan_id", "scan_id_baseline", "scan_id_a"),
    "followup": ("followup_scan_id", "scan_id_followup", "scan_id_b"),
    "years": ("interval_years", "years", "delta_years", "dt_years"),
}


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


def pair_column(pairs: pd.DataFrame, role: str, source: str) -> str:
    for name in PAIR_COLUMNS[role]:
        if name in pairs:
            return name
    raise ValueError(f"{source}: pairs table needs a {role} column (one of {PAIR_COLUMNS[role]}); "
                     f"found {list(pairs.columns)}")


@dataclass
class PairSet:
    rows: pd.DataFrame  # baseline manifest rows + 'years'
    baseline: np.ndarray  # [P, T, C]
    followup: np.ndarray  # [P, T, C]


def join_pairs(pairs: pd.DataFrame, manifest: pd.DataFrame, scan_ids: np.ndarray, latents: np.ndarray,
               splits: list[str] | None, source: str = "pairs") -> PairSet:
    """Within-subject (baseline, follow-up) latent pairs whose baseline is in ``splits``."""
    b, f, y = (pair_column(pairs, r, source) for r in ("baseline", "followup", "years"))
    pos = {s: i for i, s in enumerate(scan_ids)}
    meta = manifest.set_index("scan_id")
    keep = pairs[pairs[b].astype(str).isin(pos) & pairs[f].astype(str).isin(pos)
                 & pairs[b].astype(str).isin(meta.index)].copy()
    if splits is not None:
        keep = keep[meta.loc[keep[b].astype(str), "split"].astype(str).isin(splits).to_numpy()]
    if len(keep) == 0:
        raise ValueError(f"{source}: no longitudinal pair has both latents in splits {splits}")
    rows = meta.loc[keep[b].astype(str)].reset_index()
    rows["years"] = keep[y].to_numpy(dtype=np.float32)
    rows["followup_scan_id"] = keep[f].astype(str).to_numpy()
    bi = np.array([pos[s] for s in keep[b].astype(str)])
    fi = np.array([pos[s] for s in keep[f].astype(str)])
    return PairSet(rows=rows, baseline=latents[bi], followup=latents[fi])
