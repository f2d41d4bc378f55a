"""Encoders compared in one table: paired bootstrap over the same out-of-fold test predictions.

For a task/view/feature both encoders predicted the same units (same subjects, same folds,
since folds depend only on labels, subjects and the seed). Resampling subjects and scoring
both encoders on each resample gives the distribution of the metric difference; the 95%
interval above 0 is a win, below 0 a loss, otherwise a tie. The two-sided bootstrap p-value
(2 (k + 1) / (B + 1), k of B resamples on the losing side of 0) lets a reader apply a stricter level, e.g.
Bonferroni over several comparisons (braing3n.report.honest_check does).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from braing3n.evaluate.probes import HIGHER_IS_BETTER, compute_metrics, group_bootstrap_indices

PRIMARY = {"classification": "auroc", "regression": "mae"}


def paired_bootstrap(kind: str, y_true: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, classes: list,
                     groups: np.ndarray, metric: str, n_boot: int, seed: int,
                     level: float = 0.95) -> dict:
    """Metric of A and B, the A-minus-B difference with its CI, and the verdict for A (win/tie/loss)."""
    a = compute_metrics(kind, y_true, pred_a, classes)[metric]
    b = compute_metrics(kind, y_true, pred_b, classes)[metric]
    diffs = []
    for idx in group_bootstrap_indices(groups, n_boot, seed):
        da = compute_metrics(kind, y_true[idx], pred_a[idx], classes)[metric]
        db = compute_metrics(kind, y_true[idx], pred_b[idx], classes)[metric]
        if np.isfinite(da) and np.isfinite(db):
            diffs.append(da - db)
    diffs = np.asarray(diffs)
    alpha = (1 - level) / 2
    lo, hi = (np.quantile(diffs, alpha), np.quantile(diffs, 1 - alpha)) if len(diffs) else (np.nan, np.nan)
    sign = 1 if HIGHER_IS_BETTER[metric] else -1
    better_lo, better_hi = sorted((sign * lo, sign * hi))
    # a resample without every class has no AUROC and is dropped: the interval and p describe the
    # n_boot_valid that remain, and with none there is no verdict
    verdict = "n/a" if not len(diffs) else "win" if better_lo > 0 else "loss" if better_hi < 0 else "tie"
    # resamples with no difference (both at a ceiling) count on both sides, so a tie gets p = 1;
    # (count + 1) / (B + 1): B resamples cannot show p below 1 / (B + 1), so none reads p = 0
    worse = min(int(np.sum(diffs <= 0)), int(np.sum(diffs >= 0)))
    p = min(1.0, 2 * (worse + 1) / (len(diffs) + 1)) if len(diffs) else np.nan
    return {"metric": metric, "value_a": a, "value_b": b, "diff": a - b, "diff_lo": lo, "diff_hi": hi,
            "p_value": float(p), "verdict": verdict, "n_boot_valid": len(diffs)}


def _decode(frame: pd.DataFrame, kind: str) -> tuple[np.ndarray, np.ndarray]:
    pred = np.array(frame["y_pred"].tolist(), dtype=float)
    if kind == "regression":
        return frame["y_true"].astype(float).to_numpy(), pred[:, 0]
    return frame["y_true"].astype(str).to_numpy(), pred


def compare_encoders(predictions: pd.DataFrame, reference: str, n_boot: int, seed: int) -> pd.DataFrame:
    """One row per (task, view, feature, other encoder): reference vs other on the primary metric."""
    rows = []
    keys = ["task", "kind", "view", "feature"]
    for (task, kind, view, feature), grp in predictions.groupby(keys, sort=True):
        ref = grp[grp["encoder"] == reference].set_index("unit").sort_index()
        if ref.empty:
            continue
        for other in sorted(set(grp["encoder"]) - {reference}):
            oth = grp[grp["encoder"] == other].set_index("unit")
            common = ref.index.intersection(oth.index)
            if len(common) < 3:
                continue
            r, o = ref.loc[common], oth.loc[common]
            classes = r["classes"].iloc[0].split("|") if kind == "classification" else []
            if kind == "classification" and o["classes"].iloc[0] != r["classes"].iloc[0]:
                continue  # different class sets (different rows reached the minimum) are not comparable
            y, pa = _decode(r, kind)
            _, pb = _decode(o, kind)
            res = paired_bootstrap(kind, y, pa, pb, classes, r["subject_id"].astype(str).to_numpy(),
                                   PRIMARY[kind], n_boot, seed)
            rows.append({"task": task, "kind": kind, "view": view, "feature": feature, "encoder": reference,
                         "versus": other, "n": len(common), **res})
    return pd.DataFrame(rows)


def summary_line(comparison: pd.DataFrame, reference: str, feature: str = "mean") -> str:
    """Paper-style summary. Per task the pooled view is used (else "all", else T1); a task counts
    as won-or-tied when the reference wins or ties against every other encoder."""
    sub = comparison[(comparison["feature"] == feature) & (comparison["verdict"] != "n/a")]
    if sub.empty:
        return f"{reference}: no comparable tasks ({feature} features)"
    verdicts, counts = {}, {"win": 0, "tie": 0, "loss": 0}
    for task, grp in sub.groupby("task", sort=True):
        for view in ("pooled", "all", "T1", *sorted(grp["view"].unique())):
            if (grp["view"] == view).any():
                v = grp.loc[grp["view"] == view, "verdict"]
                verdicts[task] = bool((v != "loss").all())
                for k in counts:
                    counts[k] += int((v == k).sum())
                break
    return (f"{reference} wins or ties on {sum(verdicts.values())} of {len(verdicts)} tasks"
            f" ({feature} features, paired bootstrap 95%; comparisons won/tied/lost "
            f"{counts['win']}/{counts['tie']}/{counts['loss']})")
