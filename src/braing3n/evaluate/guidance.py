"""Guidance-scale sweep: do probes trained on REAL data recover the condition a sample was asked for?

Choice (documented in docs/evaluate.md): the probes read the latent directly. Real and generated
samples live in the same 1200x32 tokenizer latent, so a probe fitted on real latents applies to
generated ones without a decode/re-encode round trip (which would mix decoder error into the
measurement, and costs a full decoder + encoder pass per sample). Features: the 10x12x10 token
grid average-pooled by ``pool`` (2 -> 5x6x5x32 = 4800 dims), standardised.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from braing3n.evaluate.probes import fit_predict, run_probe
from braing3n.models.mae import pool_token_grid

GRID = (10, 12, 10)


def latent_features(latents: np.ndarray, pool: int = 2, grid: tuple = GRID) -> np.ndarray:
    """[N, 1200, C] token latents (row-major 10x12x10 grid) -> [N, D] pooled features."""
    lat = np.asarray(latents, np.float32)
    n, t, c = lat.shape
    if t != int(np.prod(grid)):
        raise ValueError(f"latent has {t} tokens, expected {int(np.prod(grid))} ({grid})")
    if pool <= 1:
        return lat.reshape(n, -1)
    return pool_token_grid(torch.from_numpy(lat), grid, pool, channels_last=True).numpy()


def fit_condition_probe(x_real: np.ndarray, y_real: np.ndarray, groups: np.ndarray, kind: str,
                        x_query: np.ndarray, seed: int) -> tuple[np.ndarray, list]:
    """Probe fitted on all real rows (penalty by grouped inner CV), applied to the query rows."""
    y = np.asarray(y_real).astype(str) if kind == "classification" else np.asarray(y_real, float)
    return fit_predict(np.asarray(x_real, float), y, np.asarray(groups).astype(str), np.asarray(x_query, float),
                       kind == "classification", seed)


def score_requests(kind: str, requested: np.ndarray, predicted: np.ndarray) -> dict:
    """Classification: accuracy and balanced accuracy over requested values; regression: MAE, Pearson r."""
    if kind == "classification":
        requested, predicted = np.asarray(requested).astype(str), np.asarray(predicted).astype(str)
        hit = requested == predicted
        per_value = [hit[requested == v].mean() for v in np.unique(requested)]
        return {"accuracy": float(hit.mean()), "balanced_accuracy": float(np.mean(per_value))}
    requested, predicted = np.asarray(requested, float), np.asarray(predicted, float)
    r = float(np.corrcoef(requested, predicted)[0, 1]) if np.std(requested) > 0 and np.std(predicted) > 0 else np.nan
    return {"mae": float(np.mean(np.abs(requested - predicted))), "pearson_r": r}


def guidance_table(samples: pd.DataFrame, sample_features: np.ndarray, real: pd.DataFrame,
                   real_features: np.ndarray, conditions: dict[str, dict], seed: int,
                   n_boot: int = 0, n_splits: int = 5) -> pd.DataFrame:
    """One row per (condition, cfg scale) plus a 'real' row: the probe's own grouped-CV score on real data
    (and, for categories, how many real scans of each value it learnt from: ``real_counts``).

    ``samples`` has columns condition, value, cfg_scale (one row per generated sample);
    ``conditions[name]`` = {"column": manifest column, "kind": classification|regression}.
    """
    rows = []
    for name in sorted(set(samples["condition"])):
        spec = conditions[name]
        col, kind = spec["column"], spec["kind"]
        mask = real[col].notna().to_numpy()
        yr = real.loc[mask, col]
        if kind == "classification":
            yr = yr.astype(str)
            wanted = set(samples.loc[samples["condition"] == name, "value"].astype(str))
            keep = yr.isin(wanted).to_numpy()
            mask[np.flatnonzero(mask)[~keep]] = False
            yr = yr[keep]
        xr, groups = real_features[mask], real.loc[mask, "subject_id"].to_numpy()
        n_values = samples.loc[samples["condition"] == name, "value"].nunique()
        base = {"condition": name, "column": col, "kind": kind, "n_values": n_values}
        if len(yr) < 6 or yr.nunique() < 2:
            rows.append({**base, "cfg_scale": "-", "n": len(yr), "status": "skipped",
                         "reason": f"{len(yr)} real rows / {yr.nunique()} distinct values for {col}"})
            continue
        try:
            ref = run_probe(xr, yr.to_numpy(), groups, kind, n_splits=n_splits, seed=seed, n_boot=n_boot)
        except ValueError as exc:  # too few subjects of a class for grouped folds: skip this condition
            rows.append({**base, "cfg_scale": "-", "n": len(yr), "status": "skipped",
                         "reason": str(exc).splitlines()[0]})
            continue
        if kind == "classification":
            pred_real = np.asarray(ref.classes)[ref.y_pred.argmax(1)]
            real_score = score_requests(kind, ref.y_true, pred_real)
        else:
            real_score = score_requests(kind, ref.y_true, ref.y_pred)
        # what the judge learnt from: with 3 scans of a class, a real-data probe at chance is no surprise
        counts = " ".join(f"{v}:{k}" for v, k in sorted(yr.value_counts().items())) if kind == "classification" else ""
        rows.append({**base, "cfg_scale": "real", "n": len(yr), "status": "ok", "reason": "", "real_counts": counts,
                     **real_score})
        sel = (samples["condition"] == name).to_numpy()
        pred, classes = fit_condition_probe(xr, yr.to_numpy(), groups, kind, sample_features[sel], seed)
        if kind == "classification":
            pred = np.asarray(classes)[np.argmax(pred, axis=1)]
        sub = samples[sel].assign(pred=pred)
        for scale, grp in sub.groupby("cfg_scale", sort=True):
            req = grp["value"].astype(str) if kind == "classification" else grp["value"].astype(float)
            rows.append({**base, "cfg_scale": str(scale), "n": len(grp), "status": "ok", "reason": "",
                         **score_requests(kind, req.to_numpy(), grp["pred"].to_numpy())})
    return pd.DataFrame(rows)


def plot_guidance(table: pd.DataFrame, path: str) -> None:
    """Recovery metric vs CFG scale per condition (accuracy for categorical, Pearson r for continuous)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = table[(table["status"] == "ok") & (table["cfg_scale"] != "real")]
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
    for name, grp in ok.groupby("condition", sort=True):
        metric = "accuracy" if grp["kind"].iloc[0] == "classification" else "pearson_r"
        scales = grp["cfg_scale"].astype(float)
        order = np.argsort(scales.to_numpy())
        ax.plot(scales.to_numpy()[order], grp[metric].to_numpy()[order], marker="o", label=f"{name} ({metric})")
    ax.set_xlabel("CFG scale")
    ax.set_ylabel("probe recovers the requested condition")
    ax.set_ylim(-0.05, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
