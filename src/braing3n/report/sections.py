"""The report's evaluation sections. Each: its figure(s) first, then a short table of what matters,
then the full tables folded (``<details>``) with links to their CSV files."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from braing3n.report.html import esc, full_table, img, prov_text, table
from braing3n.report.tree import Tree

PRIMARY = {"classification": "auroc", "regression": "pearson_r"}


@dataclass
class Ctx:
    tree: Tree
    rel_root: str  # the results root as seen from the page's folder
    max_rows: int
    shown: set  # table names already shown in a section (the rest go to "Other tables")

    def full(self, name: str) -> str:
        got = self.tree.table(name)
        if got is None:
            return ""
        self.shown.add(name)
        return full_table(name, got[0], got[1], f"{self.rel_root}/tables", self.max_rows)

    def fig(self, name: str, caption: str) -> str:
        path = self.tree.figure(name)
        return img(path, caption) if path else ""


def honest_section(check: pd.DataFrame, prov: dict) -> str:
    if not len(check):
        return ""
    cls = check["passed"].map({True: "pass", False: "fail"})
    return (f"<p>{int(check['passed'].sum())} of {len(check)} checks pass. Each row states the numbers behind "
            f"it (docs/evaluate.md#honest-check-demo).</p>{table(check, cls)}"
            f"<p class='prov'>files: <a href='honest_check.csv'>honest_check.csv</a> · "
            f"<a href='honest_check.md'>honest_check.md</a><br>provenance: {esc(prov_text(prov))}</p>")


def _ci(row: pd.Series, metric: str) -> str:
    v, lo, hi = (float(row.get(k, np.nan)) for k in (metric, f"{metric}_lo", f"{metric}_hi"))
    if not np.isfinite(v):
        return ""
    return f"{v:.3f} [{lo:.3f}, {hi:.3f}]" if np.isfinite(lo) and np.isfinite(hi) else f"{v:.3f}"


def best_views(probes: pd.DataFrame) -> pd.DataFrame:
    """Per task, the (view, feature) where the encoder's primary metric (AUROC; Pearson r for a
    regression) is highest; ties broken by view then feature name, so the choice is stable."""
    ok = probes[probes["status"].astype(str) == "ok"].copy()
    if not len(ok):
        return ok
    ok["_score"] = [float(r.get(PRIMARY.get(r["kind"], "auroc"), np.nan)) for _, r in ok.iterrows()]
    ok = ok.sort_values(["task", "_score", "view", "feature"], ascending=[True, False, True, True], kind="stable")
    return ok.groupby("task", sort=True).head(1).reset_index(drop=True)


def skipped_tasks(probes: pd.DataFrame) -> pd.DataFrame:
    """Tasks with no ok row, once each, with the reason of their first row."""
    status = probes["status"].astype(str)
    done = set(probes.loc[status == "ok", "task"])
    rest = probes[~probes["task"].isin(done)]
    if not len(rest):
        return pd.DataFrame(columns=["task", "why"])
    why = rest.groupby("task", sort=True)["reason"].first().fillna("").astype(str)
    return pd.DataFrame({"task": why.index, "why": why.to_numpy()})


def probes_summary(tree: Tree) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per task at the reference's best view, skipped tasks)."""
    ref = tree.df(f"probes_{tree.reference}")
    if ref is None or not len(ref) or "task" not in ref:
        return pd.DataFrame(), pd.DataFrame()
    best = best_views(ref)
    cmp = tree.df("encoder_comparison")
    others = [n.removeprefix("probes_") for n in tree.names() if n.startswith("probes_")
              and n != f"probes_{tree.reference}"]
    rows = []
    for _, r in best.iterrows():
        metric = PRIMARY.get(r["kind"], "auroc")
        row = {"task": r["task"], "view / feature": f"{r['view']} / {r['feature']}", "n": r.get("n", ""),
               "metric": metric, tree.reference: _ci(r, metric)}
        for enc in others:
            o = tree.df(f"probes_{enc}")
            hit = o[(o["task"] == r["task"]) & (o["view"] == r["view"]) & (o["feature"] == r["feature"])
                    & (o["status"].astype(str) == "ok")] if o is not None and "task" in o else o
            row[enc] = _ci(hit.iloc[0], metric) if hit is not None and len(hit) else "-"
            if cmp is not None and "versus" in cmp:
                c = cmp[(cmp["task"] == r["task"]) & (cmp["view"] == r["view"]) & (cmp["feature"] == r["feature"])
                        & (cmp["versus"] == enc)]
                if len(c):
                    p = float(c["p_value"].iloc[0]) if "p_value" in c else np.nan
                    row[f"vs {enc}"] = f"{c['verdict'].iloc[0]}" + (f" (p={p:.2g})" if np.isfinite(p) else "")
        rows.append(row)
    return pd.DataFrame(rows), skipped_tasks(ref)


def probes_section(ctx: Ctx) -> str:
    tree = ctx.tree
    parts = [ctx.fig("probes", "probe metric per task and encoder, 95% CI (pooled view, mean features)")]
    summary = tree.df("encoder_summary")
    if summary is not None and "summary" in summary:
        parts.append("<ul>" + "".join(f"<li>{esc(s)}</li>" for s in summary["summary"]) + "</ul>")
    best, skipped = probes_summary(tree)
    if len(best):
        parts.append(f"<h3>One row per task: {esc(tree.reference)}'s best view and feature</h3>"
                     f"<p class='note'>the view x feature with the highest {esc(tree.reference)} AUROC (Pearson r "
                     f"for a regression), the other encoders at the same view and feature, and the paired-bootstrap "
                     f"verdict (AUROC; MAE for a regression). The full tables have every view and feature.</p>"
                     + table(best))
    if len(skipped):
        items = "".join(f"<li><b>{esc(t)}</b>: {esc(w)}</li>" for t, w in zip(skipped["task"], skipped["why"],
                                                                                 strict=True))
        parts.append(f"<details class='skipped'><summary>{len(skipped)} task(s) skipped, with why</summary>"
                     f"<ul>{items}</ul></details>")
    for name in ["encoder_summary", "encoder_comparison", *[n for n in tree.names() if n.startswith("probes_")]]:
        parts.append(ctx.full(name))
    return "".join(p for p in parts if p)


def tokenizer_section(ctx: Ctx) -> str:
    parts = [ctx.fig("reconstructions", "held-out scans: real | reconstruction | absolute error (real and "
                                        "reconstruction on the real brain's 1st-99th percentile window)")]
    for name, title in (("reconstruction_summary", "Reconstruction of held-out scans"),
                        ("tokenizers", "MAE tokenizer vs AutoencoderKL")):
        df = ctx.tree.df(name)
        if df is not None and len(df):
            parts.append(f"<h3>{esc(title)}</h3>{table(df)}")
            ctx.shown.add(name)
    for name in ("reconstruction", "reconstruction_summary", "tokenizers"):
        parts.append(ctx.full(name))
    return "".join(p for p in parts if p)


def _guidance_short(g: pd.DataFrame) -> pd.DataFrame:
    g = g[g["status"].astype(str) == "ok"]
    rows = []
    for name, grp in g.groupby("condition", sort=True):
        metric = "accuracy" if grp["kind"].iloc[0] == "classification" else "pearson_r"
        real = grp[grp["cfg_scale"].astype(str) == "real"]
        row = {"condition": name, "metric": metric,
               "chance": 1 / float(grp["n_values"].iloc[0]) if metric == "accuracy" else 0.0,
               "judge on real scans": float(real[metric].iloc[0]) if len(real) else np.nan}
        for _, r in grp[grp["cfg_scale"].astype(str) != "real"].iterrows():
            row[f"cfg {r['cfg_scale']}"] = float(r[metric])
        rows.append(row)
    return pd.DataFrame(rows)


def _fid_short(f: pd.DataFrame) -> pd.DataFrame:
    ok = f[f["status"].astype(str) == "ok"].copy()
    if not len(ok):
        return pd.DataFrame()
    ok["fid [95% CI]"] = [f"{v:.3g} [{lo:.3g}, {hi:.3g}]" if np.isfinite(lo) else f"{v:.3g}"
                          for v, lo, hi in zip(ok["fid"], ok["fid_lo"], ok["fid_hi"], strict=True)]
    return ok.pivot(index="arm", columns="comparison", values="fid [95% CI]").reset_index().rename_axis(None, axis=1)


def generation_section(ctx: Ctx) -> str:
    tree = ctx.tree
    parts = []
    if tree.figure("samples_vs_real"):
        parts.append(ctx.fig("samples_vs_real", "per arm: a real scan of that arm, its tokenizer reconstruction and "
                                                "generated samples, one intensity window (the real brain's 1st-99th "
                                                "percentile), axial / coronal / sagittal through one point"))
    else:  # a tree made before `braing3n evaluate figures` existed
        parts.append(ctx.fig("samples_by_condition", "one decoded sample per requested value"))
    parts.append(ctx.fig("guidance", "real-data probes on the generated samples, per guidance scale"))
    g, f, m = tree.df("guidance"), tree.df("fid"), tree.df("memorisation")
    if g is not None and len(g) and "condition" in g:
        parts.append("<h3>Guidance: does a sample show what was asked for?</h3>" + table(_guidance_short(g)))
    if f is not None and len(f) and "arm" in f:
        extractor = ", ".join(sorted(set(map(str, f.get("extractor", [])))))
        parts.append(f"<h3>Decomposed 3D-FID per arm</h3><p class='note'>features: {esc(extractor)}</p>"
                     + table(_fid_short(f)))
    if m is not None and len(m):
        keep = [c for c in ("n_generated", "n_near_copies", "median_distance_generated", "median_distance_heldout",
                            "p_generated_closer", "fixed") if c in m]
        parts.append("<h3>Memorisation</h3>" + table(m[keep]))
    mosaics = tree.sample_mosaics()
    if mosaics:
        figs = "".join(img(p, f"samples/{p.parent.name}") for p in mosaics)
        parts.append(f"<details><summary>`braing3n generate` arms ({len(mosaics)} mosaics, z-score window)"
                     f"</summary><div class='grid'>{figs}</div></details>")
    for name in ("guidance", "fid", "memorisation", "memorisation_samples"):
        parts.append(ctx.full(name))
    return "".join(p for p in parts if p)


MIN_R_PAIRS = 3  # braing3n.evaluate.longitudinal.age_progression gives no r below this


def why_no_r(row: pd.Series, pairs: pd.DataFrame | None) -> str:
    """Why a pair group's age-change Pearson r is missing, by age_progression's own rules, read from
    the per-pair table (requested interval, probe-predicted baseline and forecast ages)."""
    need = {"pairs", "years", "pred_age_baseline", "pred_age_forecast"}
    if pairs is None or not need <= set(pairs.columns):
        n = int(pd.to_numeric(pd.Series([row.get("n_pairs")]), errors="coerce").fillna(0).iloc[0])
        if n < MIN_R_PAIRS:
            return f"{n} pair(s), r needs {MIN_R_PAIRS}"
        return "interval or predicted age change constant over the pairs (no per-pair table to say which)"
    sel = pairs[pairs["pairs"].astype(str) == str(row.get("pairs"))]
    years = pd.to_numeric(sel["years"], errors="coerce").to_numpy(float)
    delta = (pd.to_numeric(sel["pred_age_forecast"], errors="coerce")
             - pd.to_numeric(sel["pred_age_baseline"], errors="coerce")).to_numpy(float)
    ok = np.isfinite(years) & np.isfinite(delta)
    years, delta = years[ok], delta[ok]
    if len(years) < MIN_R_PAIRS:
        return f"{len(years)} pair(s) with a forecast and a predicted age, r needs {MIN_R_PAIRS}"
    if np.std(years) == 0:
        return f"every pair has the same interval ({years[0]:g} years), so r is undefined"
    if np.std(delta) == 0:
        return "the predicted age change is the same for every pair, so r is undefined"
    return "not computed (see the per-pair table)"


def age_r_text(row: pd.Series, pairs: pd.DataFrame | None) -> str:
    """A pair group's age-change r as shown: two decimals, or "n/a (why)" where it is missing."""
    r = pd.to_numeric(pd.Series([row.get("age_change_pearson_r")]), errors="coerce").iloc[0]
    return f"{r:.2f}" if np.isfinite(r) else f"n/a ({why_no_r(row, pairs)})"


def longitudinal_section(ctx: Ctx) -> str:
    lo = ctx.tree.df("longitudinal")
    if lo is None or not len(lo):
        return ""
    keep = [c for c in ("pairs", "n_pairs", "age_change_pearson_r", "age_change_slope", "mean_latent_mae",
                        "mean_latent_mae_no_change", "mean_voxel_l1", "mean_voxel_l1_no_change",
                        "change_fraction_csf_ventricles", "volume_fraction_csf_ventricles") if c in lo]
    short = lo[keep].copy()
    if "age_change_pearson_r" in short:
        pairs = ctx.tree.df("longitudinal_pairs")
        short["age_change_pearson_r"] = [age_r_text(r, pairs) for _, r in lo.iterrows()]
    parts = [table(short), ctx.full("longitudinal"), ctx.full("longitudinal_pairs")]
    return "".join(parts)


def data_section(ctx: Ctx) -> str:
    df = ctx.tree.df("dataset_summary")
    parts = [table(df) if df is not None and len(df) else ""]
    return "".join([*parts, ctx.full("dataset_summary"), ctx.full("dataset_coverage")])


def other_section(ctx: Ctx) -> str:
    rest = [n for n in ctx.tree.names() if n not in ctx.shown and not n.startswith("probe_predictions_")]
    return "".join(ctx.full(n) for n in rest)
