"""The honest check: are the known effects planted in the phantom cohorts recovered?

One row per check with the numbers behind it (written by `braing3n report` to
report/honest_check.csv and shown at the top of the page); docs/evaluate.md#honest-check.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from braing3n.provenance import read_table

# The honest check reads the T1 view: every subject has a T1, so each unit is the same kind of
# measurement; the patient-pooled view averages a different modality set per subject (T1 only,
# T1 + FLAIR, four tumour sequences), a nuisance that small demo cohorts cannot average out.
CHECK_VIEW = "T1"
# Features: the token grid average-pooled (braing3n.models.mae.pool_token_grid) when both encoders
# give it, else mean-pooled tokens. The planted effects are local (ventricles, medial temporal
# lobe), and the mean over 1,200 tokens averages them away: on the demo-sized chain the age probe
# reads r = 0.79 from the grid and -0.03 from the mean (the numbers behind this choice are in
# docs/evaluate.md).
CHECK_FEATURES = ("grid", "mean")
CHANCE = {"auroc": 0.5, "pearson_r": 0.0}
ALPHA = 0.05
# Said on the "beats the floor" row of every run: the CPU demo's tiny MAE (1,000 steps) ties its
# untrained twin on the demo-sized chain and wins or ties from one `make demo` training to the next,
# so on CPU the row is no verdict on the install; a GPU-trained ViT-B MAE is (issue #7).
WIN_ROW_NOTE = ("on CPU this row is not expected to pass (the demo's tiny MAE, 1,000 steps, reads the planted "
                "effects about as well as its untrained twin); the run that decides it is `make gpu-check-demo` "
                "(the demo learning chain with config/demo_gpu.yaml on one GPU)")


def _check_feature(df: pd.DataFrame, encoders: tuple[str, str]) -> str:
    for feature in CHECK_FEATURES:
        if all(((df["encoder"] == e) & (df["feature"] == feature)).any() for e in encoders):
            return feature
    return CHECK_FEATURES[-1]


def _probe_row(df: pd.DataFrame, encoder: str, task: str, feature: str) -> pd.Series | None:
    hit = df[(df["encoder"] == encoder) & (df["task"] == task) & (df["status"] == "ok")
             & (df["feature"] == feature) & (df["view"] == CHECK_VIEW)]
    return hit.iloc[0] if len(hit) else None


def _above_chance_p(kind: str, n: int, value: float, chance: float) -> float:
    """One-sided p-value that generated samples follow the request better than chance: binomial test
    on the number of hits (accuracy) or the Pearson correlation test (requested vs predicted)."""
    from scipy import stats

    if not (n and np.isfinite(value)):
        return 1.0
    if kind == "accuracy":
        return float(stats.binomtest(int(round(value * n)), n, chance, alternative="greater").pvalue)
    if n < 3 or value >= 1.0:
        return 0.0 if value >= 1.0 else 1.0
    t = value * np.sqrt((n - 2) / max(1e-12, 1 - value ** 2))
    return float(stats.t.sf(t, n - 2))


def _judge_detail(real: pd.DataFrame, name: str, metric: str, chance: float, level: float) -> str:
    """How well the probe that judges the samples reads the condition on real scans (grouped CV).
    A judge at chance on real data cannot tell whether the samples follow the request."""
    if name not in real.index or not np.isfinite(float(real.loc[name, metric])):
        return ""
    row = real.loc[name]
    value, n = float(row[metric]), int(row["n"])
    counts = row.get("real_counts", "")
    counts = f", {counts}" if isinstance(counts, str) and counts else ""
    note = "" if _above_chance_p(metric, n, value, chance) < level else (
        " - the judge itself is not above chance on real scans, so this row cannot pass until it is")
    return f"; judge on real scans: {metric} {value:.2f} (n={n}{counts}){note}"


# The planted effects a probe should read (braing3n.phantom.plan): sex (a fixed shape pattern and
# wider ventricles in men), age (sulcal and ventricular atrophy) and disease severity (CDR-SB rises
# with diagnosis and follow-up time, as the medial temporal atrophy of MCI/AD does).
KNOWN_EFFECTS = (("sex", "auroc"), ("age", "pearson_r"), ("cdr_sb", "pearson_r"))


def _verdict(cmp: pd.DataFrame, task: str, floor: str, feature: str) -> tuple[str, float, str]:
    """Paired-bootstrap verdict of the reference vs the floor, its two-sided p-value and the metric
    compared (the primary one: AUROC, or MAE for a regression)."""
    if not len(cmp) or "versus" not in cmp:
        return "", np.nan, ""
    hit = cmp[(cmp["task"] == task) & (cmp["versus"] == floor) & (cmp["view"] == CHECK_VIEW)
              & (cmp["feature"] == feature)]
    if not len(hit):
        return "", np.nan, ""
    p = float(hit["p_value"].iloc[0]) if "p_value" in hit else np.nan
    return str(hit["verdict"].iloc[0]), p, str(hit["metric"].iloc[0]) if "metric" in hit else ""


def honest_check(tables: Path, reference: str = "mae", floor: str = "random_vit") -> pd.DataFrame:
    """Known effects of the phantom cohorts recovered? One row per check with the numbers behind it.

    Probes (T1 view; grid features, else mean): per known effect, the reference encoder's 95% CI lies
    above chance and it does not lose to the random floor (paired bootstrap); plus one row that it
    WINS on at least one effect at p < 0.05 Bonferroni-corrected over the effects (both encoders can
    sit at the ceiling on an easy effect, so a tie there is no failure); that row says that on CPU it
    is not expected to pass and that `make gpu-check-demo` decides it (WIN_ROW_NOTE).
    Guidance: at the best scale, samples follow the requested condition better than chance,
    one-sided p < 0.05 Bonferroni-corrected over the scales tried.
    """
    rows = []
    paths = [tables / f"probes_{e}.csv" for e in (reference, floor)]
    probes = [read_table(p)[0] for p in paths if p.exists()]
    probes = pd.concat(probes, ignore_index=True) if probes else pd.DataFrame()
    cmp_path = tables / "encoder_comparison.csv"
    cmp = read_table(cmp_path)[0] if cmp_path.exists() else pd.DataFrame()
    verdicts = {}
    feature = _check_feature(probes, (reference, floor)) if len(probes) else CHECK_FEATURES[-1]
    for task, metric in KNOWN_EFFECTS if len(probes) else ():
        ref, flo = _probe_row(probes, reference, task, feature), _probe_row(probes, floor, task, feature)
        if ref is None or flo is None:
            rows.append({"check": f"{task} {metric} ({CHECK_VIEW}, {feature}): {reference} vs {floor}", "value": np.nan,
                         "reference": np.nan, "passed": False, "detail": "probe missing or skipped"})
            continue
        verdict, p, compared = _verdict(cmp, task, floor, feature)
        verdicts[task] = (verdict, p)
        lo = float(ref[f"{metric}_lo"])
        ok = bool(lo > CHANCE[metric] and verdict in ("win", "tie"))
        rows.append({"check": f"{task} {metric} ({CHECK_VIEW}, {feature}): {reference} above chance, not below {floor}",
                     "value": float(ref[metric]), "reference": float(flo[metric]), "passed": ok,
                     "detail": f"{reference} 95% CI [{lo:.3f}, {float(ref[metric + '_hi']):.3f}] vs chance "
                               f"{CHANCE[metric]}; paired bootstrap vs {floor} on {compared or '?'}: "
                               f"{verdict or 'n/a'} (p={p:.2g})"})
    if verdicts:
        level = ALPHA / len(KNOWN_EFFECTS)
        wins = [t for t, (v, p) in verdicts.items() if v == "win" and p < level]
        said = ", ".join(f"{t}: {v or 'n/a'} p={p:.2g}" for t, (v, p) in verdicts.items())
        if any(v and not np.isfinite(p) for v, p in verdicts.values()):
            said += "; p_value missing from encoder_comparison.csv (older table): rerun `braing3n evaluate compare`"
        rows.append({"check": f"{reference} beats {floor} on at least one known effect", "value": float(len(wins)),
                     "reference": 1.0, "passed": bool(wins),
                     "detail": f"paired bootstrap ({said}); a win needs p < {level:.3g} "
                               f"(0.05 over {len(KNOWN_EFFECTS)} effects); {WIN_ROW_NOTE}"})
    gpath = tables / "guidance.csv"
    if gpath.exists():
        g, _ = read_table(gpath)
        g = g[g["status"] == "ok"]
        real = g[g["cfg_scale"].astype(str) == "real"].set_index("condition")
        g = g[g["cfg_scale"].astype(str) != "real"]
        for name, grp in g.groupby("condition", sort=True):
            metric = "accuracy" if grp["kind"].iloc[0] == "classification" else "pearson_r"
            values = grp[metric].astype(float)
            if not values.notna().any():
                rows.append({"check": f"generated samples follow requested {name} (best {metric} over scales)",
                             "value": np.nan, "reference": np.nan, "passed": False,
                             "detail": f"no finite {metric} (fewer than 2 requested values?)"})
                continue
            best = grp.loc[values.idxmax()]
            # chance = 1 / number of requested values (accuracy); no correlation (Pearson r)
            chance = 1.0 / float(best["n_values"]) if metric == "accuracy" else 0.0
            p = _above_chance_p(metric, int(best["n"]), float(best[metric]), chance)
            level = ALPHA / grp["cfg_scale"].nunique()
            rows.append({"check": f"generated samples follow requested {name} (best {metric} over scales)",
                         "value": float(best[metric]), "reference": chance, "passed": bool(p < level),
                         "detail": f"cfg scale {best['cfg_scale']}, n={int(best['n'])}, one-sided p={p:.2g} "
                                   f"(needs < {level:.3g}){_judge_detail(real, name, metric, chance, level)}"})
    return pd.DataFrame(rows, columns=["check", "value", "reference", "passed", "detail"])
