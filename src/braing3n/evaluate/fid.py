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


def _cluster_draw(groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Row indices of one cluster-bootstrap draw: units (subjects) with replacement, all rows of each."""
    units, inverse = np.unique(groups, return_inverse=True)
    rows = [np.flatnonzero(inverse == u) for u in range(len(units))]
    return np.concatenate([rows[u] for u in rng.integers(0, len(units), len(units))])


def fid_with_ci(a: np.ndarray, b: np.ndarray, n_boot: int, seed: int, level: float = 0.95,
                groups_a: np.ndarray | None = None, groups_b: np.ndarray | None = None,
                paired: bool = False) -> tuple[float, float, float]:
    """FID and a bootstrap interval around it.

    Resampling unit: the subject when ``groups_*`` give each row's subject (a subject's scans are
    not independent), else the row; ``paired`` (``a`` and ``b`` the same scans, e.g. reconstruction
    vs real) draws the same rows for both. A resampled set holds duplicate rows, which shrinks its
    covariance and pushes every draw's FID up (the plain percentile interval of two same-distribution
    sets of 16 and 8 in 16 dims lies wholly above its point estimate), so the percentiles are shifted
    by the draws' median minus the point: the interval keeps the bootstrap's spread and always holds
    the point; its lower end is clipped at 0.
    """
    point = fid(a, b)
    if n_boot <= 0:
        return point, np.nan, np.nan
    if paired and len(a) != len(b):
        raise ValueError(f"paired FID bootstrap needs equal set sizes, got {len(a)} and {len(b)}")
    ga = np.arange(len(a)) if groups_a is None else np.asarray(groups_a)
    gb = ga if paired else (np.arange(len(b)) if groups_b is None else np.asarray(groups_b))
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        ia = _cluster_draw(ga, rng)
        ib = ia if paired else _cluster_draw(gb, rng)
        try:
            draws.append(fid(a[ia], b[ib]))
        except ValueError:  # a draw of fewer than 2 rows (one single-scan subject drawn): no FID
            continue
    if not draws:
        return point, np.nan, np.nan
    alpha = (1 - level) / 2
    shift = float(np.median(draws)) - point
    lo, hi = np.quantile(draws, alpha) - shift, np.quantile(draws, 1 - alpha) - shift
    return point, float(max(lo, 0.0)), float(hi)


def decomposed_fid(features: dict[str, dict[str, np.ndarray]], extractor: str, n_boot: int,
                   seed: int) -> pd.DataFrame:
    """``features[arm][source]`` with source in real/reconstruction/generated -> one row per comparison.

    ``features[arm]["subject"]``, when given, is the subject of each real row; the reconstruction
    rows are the same scans in the same order, so "reconstruction vs real" is bootstrapped paired.
    An arm with fewer than 2 samples in a source is reported with status skipped and the reason.
    """
    rows = []
    for arm in sorted(features):
        subjects = features[arm].get("subject")
        for i, (x, y) in enumerate(COMPARISONS):
            fa, fb = features[arm].get(x), features[arm].get(y)
            na, nb = (0 if f is None else len(f) for f in (fa, fb))
            row = {"arm": arm, "comparison": f"{x} vs {y}", "extractor": extractor, "n_a": na, "n_b": nb}
            if na < 2 or nb < 2:
                rows.append({**row, "fid": np.nan, "fid_lo": np.nan, "fid_hi": np.nan, "status": "skipped",
                             "reason": f"{x} n={na}, {y} n={nb} (need >= 2 each)"})
                continue
            groups = {s: subjects for s in ("real", "reconstruction")} if subjects is not None else {}
            try:
                value, lo, hi = fid_with_ci(fa, fb, n_boot, seed + i, groups_a=groups.get(x), groups_b=groups.get(y),
                                            paired=(x, y) == ("reconstruction", "real"))
            except ValueError as exc:  # one degenerate arm is reported, the others go on
                rows.append({**row, "fid": np.nan, "fid_lo": np.nan, "fid_hi": np.nan, "status": "failed",
                             "reason": str(exc)})
                continue
            rows.append({**row, "fid": value, "fid_lo": lo, "fid_hi": hi, "status": "ok", "reason": ""})
    return pd.DataFrame(rows)
