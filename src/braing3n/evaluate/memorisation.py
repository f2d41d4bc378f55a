"""Memorisation: is a generated sample closer to a training scan than real unseen scans ever are?

Each generated sample's distance to its nearest training scan is compared with the same
distance for real held-out scans (subjects never trained on). A generated sample closer than
``factor`` times the ``quantile`` of the held-out distances (default: half the distance that 99%
of unseen real scans exceed) is flagged as a near-copy - the factor keeps the expected false-alarm
rate of an honest generator well below the quantile; an exact copy has distance 0 and is always flagged. Distances are
Euclidean on features standardised with the training-set mean and standard deviation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.neighbors import NearestNeighbors


def nearest(query: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance to and index of the nearest reference row for every query row."""
    nn = NearestNeighbors(n_neighbors=1).fit(reference)
    dist, idx = nn.kneighbors(query)
    return dist[:, 0], idx[:, 0]


def memorisation(generated: np.ndarray, train: np.ndarray, heldout: np.ndarray, train_ids: list[str],
                 quantile: float = 0.01, factor: float = 0.5) -> tuple[pd.DataFrame, dict]:
    """Per-sample table (nearest training scan, distance, flag) and a summary dict."""
    if len(train) < 1 or len(heldout) < 2 or len(generated) < 1:
        raise ValueError(f"memorisation needs train>=1, heldout>=2, generated>=1 rows, got "
                         f"{len(train)}, {len(heldout)}, {len(generated)}")
    mu, sd = train.mean(0), train.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    z = [(np.asarray(a, np.float64) - mu) / sd for a in (generated, train, heldout)]
    d_gen, i_gen = nearest(z[0], z[1])
    d_held, _ = nearest(z[2], z[1])
    threshold = factor * float(np.quantile(d_held, quantile))
    flagged = d_gen <= threshold
    table = pd.DataFrame({"sample": np.arange(len(d_gen)), "nearest_train_scan": np.asarray(train_ids)[i_gen],
                          "distance": d_gen, "near_copy": flagged})
    # one-sided test: generated samples sit closer to the training set than unseen real scans
    p = float(stats.mannwhitneyu(d_gen, d_held, alternative="less").pvalue) if len(d_gen) > 1 else np.nan
    summary = {"n_generated": len(d_gen), "n_train": len(train), "n_heldout": len(d_held),
               "median_distance_generated": float(np.median(d_gen)),
               "median_distance_heldout": float(np.median(d_held)),
               "threshold": threshold, "threshold_quantile": quantile, "threshold_factor": factor,
               "n_near_copies": int(flagged.sum()), "fraction_near_copies": float(flagged.mean()),
               "p_generated_closer": p}
    return table, summary
