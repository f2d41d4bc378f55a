"""Longitudinal forecasts: forecast vs actual follow-up, age progression, where the change sits.

- latent error: MAE/MSE between the forecast latent and the actual follow-up latent, next to the
  "no change" baseline (baseline latent used as the forecast) - a forecast must beat it.
- voxel error: L1 inside the brain between the decoded forecast and the decoded actual follow-up
  (both through the same decoder so decoder error cancels), again next to "no change".
- age progression: an age probe trained on real latents predicts the age of baseline and forecast;
  Pearson r between the requested interval and the predicted age change.
- localisation: the share of the absolute voxel change |forecast - baseline| that falls inside
  CSF/ventricles (SRI24-derived tissue labels) and its enrichment over their volume share.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

CSF_LABEL = 1
BRAIN_LABELS = (1, 2, 3, 4, 5, 6)  # CSF, GM, WM, tumour parts; 7 = skull/scalp (braing3n.phantom.tissues)


def latent_errors(forecast: np.ndarray, followup: np.ndarray, baseline: np.ndarray) -> pd.DataFrame:
    """Per pair: forecast and no-change MAE/MSE in latent space."""
    f, y, b = (np.asarray(a, np.float64).reshape(len(a), -1) for a in (forecast, followup, baseline))
    return pd.DataFrame({"latent_mae": np.abs(f - y).mean(1), "latent_mse": ((f - y) ** 2).mean(1),
                         "latent_mae_no_change": np.abs(b - y).mean(1),
                         "latent_mse_no_change": ((b - y) ** 2).mean(1)})


def voxel_errors(forecast: np.ndarray, followup: np.ndarray, baseline: np.ndarray,
                 mask: np.ndarray) -> pd.DataFrame:
    """Per pair: voxel L1 inside ``mask`` (same grid as the volumes) for forecast and no change."""
    m = np.asarray(mask, bool)
    rows = []
    for f, y, b in zip(forecast, followup, baseline, strict=True):
        rows.append({"voxel_l1": float(np.abs(f[m] - y[m]).mean()),
                     "voxel_l1_no_change": float(np.abs(b[m] - y[m]).mean())})
    return pd.DataFrame(rows)


def change_localisation(forecast: np.ndarray, baseline: np.ndarray, labels: np.ndarray,
                        ventricles: np.ndarray | None = None) -> dict:
    """Fraction of the summed |forecast - baseline| inside CSF (label 1) or ventricles, within the brain,
    and its enrichment = fraction / (CSF+ventricle share of brain voxels); >1 means the change
    concentrates there."""
    brain = np.isin(np.asarray(labels), BRAIN_LABELS)
    csf = np.asarray(labels) == CSF_LABEL
    if ventricles is not None:
        csf = csf | (np.asarray(ventricles) > 0)
    csf &= brain
    change = np.abs(np.asarray(forecast, np.float64) - np.asarray(baseline, np.float64))
    if change.ndim == labels.ndim + 1:
        change = change.sum(0)
    total = change[brain].sum()
    share = csf.sum() / max(1, brain.sum())
    frac = float(change[csf].sum() / total) if total > 0 else np.nan
    return {"change_fraction_csf_ventricles": frac, "volume_fraction_csf_ventricles": float(share),
            "change_enrichment_csf_ventricles": frac / share if share > 0 and np.isfinite(frac) else np.nan,
            "change_fraction_elsewhere": 1 - frac if np.isfinite(frac) else np.nan}


def age_progression(requested_years: np.ndarray, predicted_baseline_age: np.ndarray,
                    predicted_forecast_age: np.ndarray) -> dict:
    """Pearson r (and slope) between requested interval and probe-predicted age change."""
    req = np.asarray(requested_years, float)
    delta = np.asarray(predicted_forecast_age, float) - np.asarray(predicted_baseline_age, float)
    ok = np.isfinite(req) & np.isfinite(delta)
    req, delta = req[ok], delta[ok]
    if len(req) < 3 or np.std(req) == 0 or np.std(delta) == 0:
        return {"n_pairs": int(len(req)), "age_change_pearson_r": np.nan, "age_change_slope": np.nan,
                "mean_predicted_change": float(delta.mean()) if len(delta) else np.nan}
    r = float(np.corrcoef(req, delta)[0, 1])
    slope = float(np.polyfit(req, delta, 1)[0])
    return {"n_pairs": int(len(req)), "age_change_pearson_r": r, "age_change_slope": slope,
            "mean_predicted_change": float(delta.mean())}
