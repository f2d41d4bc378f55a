"""Decomposed 3D-FID per conditioning arm: generated vs real, generated vs reconstruction,
reconstruction vs real, each with a bootstrap interval and the sample counts.

The distance is MONAI's ``FIDMetric`` on feature vectors; which network produced the features
(MedicalNet ResNet trunk + global average pool when the user supplies its weights, otherwise the
project's frozen MAE encoder) is a column of every table, because FIDs from different extractors
are not comparable.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from monai.metrics import FIDMetric
from monai.metrics.fid import compute_frechet_distance

COMPARISONS = (("generated", "real"), ("generated", "reconstruction"), ("reconstruction", "real"))


def fid(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between the Gaussian fits of two feature sets (rows = samples)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"FID needs two (n, d) feature sets of equal d, got {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"FID needs at least 2 samples per set, got {len(a)} and {len(b)}")
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    try:
        value = float(FIDMetric()(ta, tb))
    except ValueError:
        # fewer samples than feature dims: singular covariances can make sqrtm complex; regularise
        # both with eps*I (what MONAI itself does when sqrtm is non-finite)
        eye = torch.eye(a.shape[1], dtype=torch.float64) * 1e-6
        value = float(compute_frechet_distance(ta.mean(0), torch.cov(ta.T) + eye, tb.mean(0), torch.cov(tb.T) + eye))
    if not np.isfinite(value):
        raise ValueError(f"FID is not finite for sets of {len(a)} and {len(b)} samples in {a.shape[1]} dims")
    return max(value, 0.0)  # sqrtm round-off can give -1e-12 for identical sets


def fid_with_ci(a: np.ndarray, b: np.ndarray, n_boot: int, seed: int,
                level: float = 0.95) -> tuple[float, float, float]:
    """FID and a percentile bootstrap interval (both sets resampled with replacement)."""
    point = fid(a, b)
    if n_boot <= 0:
        return point, np.nan, np.nan
    rng = np.random.default_rng(seed)
    draws = [fid(a[rng.integers(0, len(a), len(a))], b[rng.integers(0, len(b), len(b))]) for _ in range(n_boot)]
    alpha = (1 - level) / 2
    return point, float(np.quantile(draws, alpha)), float(np.quantile(draws, 1 - alpha))


def decomposed_fid(features: dict[str, dict[str, np.ndarray]], extractor: str, n_boot: int,
                   seed: int) -> pd.DataFrame:
    """``features[arm][source]`` with source in real/reconstruction/generated -> one row per comparison.

    An arm with fewer than 2 samples in a source is reported with status skipped and the reason.
    """
    rows = []
    for arm in sorted(features):
        for i, (x, y) in enumerate(COMPARISONS):
            fa, fb = features[arm].get(x), features[arm].get(y)
            na, nb = (0 if f is None else len(f) for f in (fa, fb))
            row = {"arm": arm, "comparison": f"{x} vs {y}", "extractor": extractor, "n_a": na, "n_b": nb}
            if na < 2 or nb < 2:
                rows.append({**row, "fid": np.nan, "fid_lo": np.nan, "fid_hi": np.nan, "status": "skipped",
                             "reason": f"{x} n={na}, {y} n={nb} (need >= 2 each)"})
                continue
            try:
                value, lo, hi = fid_with_ci(fa, fb, n_boot, seed + i)
            except ValueError as exc:  # one degenerate arm is reported, the others go on
                rows.append({**row, "fid": np.nan, "fid_lo": np.nan, "fid_hi": np.nan, "status": "failed",
                             "reason": str(exc)})
                continue
            rows.append({**row, "fid": value, "fid_lo": lo, "fid_hi": hi, "status": "ok", "reason": ""})
    return pd.DataFrame(rows)
