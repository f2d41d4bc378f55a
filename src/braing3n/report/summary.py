"""The report's first screen: what was run, then the headline numbers beside the paper's.

The paper's figures are quoted from its summary (paper/, digest in REFERENCE.md); where the paper
states no number (FID, guidance) its qualitative finding is quoted instead.
"""

from __future__ import annotations

from collections import Counter

import pandas as pd

from braing3n.report.html import esc, table
from braing3n.report.sections import age_r_text
from braing3n.report.tree import Tree, enabled_cohorts

PAPER = {
    "qc": "35,309 volumes, 17,399 subjects, 18 cohorts",
    "probes": "wins or ties on 21 of 23 tasks vs BrainIAC, BrainSegFounder, MedicalNet",
    "tokenizer": "MAE beats AutoencoderKL on IDH1 / grade probes with a smaller bottleneck",
    "fid": "generated vs reconstruction well below reconstruction vs real (the tokenizer is the gap)",
    "guidance": "disease and sex recovered at every scale; age degrades at high scale; IDH1 near chance",
    "memorisation": "no memorisation",
    "longitudinal": "age progression Pearson r = 0.72",
}


def _qc_counts(tree: Tree) -> tuple[int, int, int]:
    ok = failed = outliers = 0
    for df, _ in tree.qc_tables().values():
        status = df["status"].astype(str) if "status" in df else pd.Series(dtype=str)
        ok, failed = ok + int((status == "ok").sum()), failed + int((status == "failed").sum())
        outliers += int(df["outlier"].astype(str).isin(["True", "true", "1"]).sum()) if "outlier" in df else 0
    return ok, failed, outliers


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown (no logs/ or no tables)"
    h, rem = divmod(int(round(seconds)), 3600)
    return f"{h} h {rem // 60:02d} min" if h else f"{rem // 60} min {rem % 60:02d} s"


def run_facts(tree: Tree, check: pd.DataFrame, check_prov: dict) -> list[tuple[str, str]]:
    """(label, text) pairs: cohorts, scans, subjects, models, config hash, commit, duration."""
    facts = []
    cohorts = enabled_cohorts(tree.config) or sorted(tree.qc_tables())
    facts.append(("cohorts", f"{len(cohorts)}: {', '.join(cohorts)}" if cohorts else "none configured"))
    ok, failed, outliers = _qc_counts(tree)
    facts.append(("scans", f"{ok} preprocessed ok, {failed} failed, {outliers} QC outliers"))
    man = tree.manifest()
    if man is not None and "subject_id" in man:
        split = man.groupby("split")["subject_id"].nunique() if "split" in man else pd.Series(dtype=int)
        parts = ", ".join(f"{k} {v}" for k, v in split.items())
        facts.append(("subjects", f"{man['subject_id'].nunique()} subjects, {len(man)} scans in the manifest"
                                  + (f" (subjects per split: {parts})" if parts else "")))
    models = tree.models()
    if models:
        facts.append(("models", "; ".join(
            f"{m['model']} ({m['task']}): {m['steps']} steps" + (f", final loss {m['final_loss']:.4g}"
                                                                 if "final_loss" in m else "") for m in models)))
    provs = [p for p in tree.provenances() if p] or [check_prov]
    for key, label in (("config_hash", "config hash"), ("git_commit", "commit")):
        seen = Counter(str(p.get(key, "?")) for p in provs)
        facts.append((label, ", ".join(f"{v}" + (f" ({n} tables)" if len(seen) > 1 else "")
                                       for v, n in seen.most_common())))
    facts.append(("duration", f"{_duration(tree.wall_span_s())} (first log file to last table, file times)"))
    facts.append(("results", str(tree.root)))
    return facts


def facts_html(facts: list[tuple[str, str]]) -> str:
    return "<dl class='facts'>" + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in facts) + "</dl>"


def _probes_line(tree: Tree) -> str:
    s = tree.df("encoder_summary")
    if s is None or not len(s) or "summary" not in s:
        return ""
    return "; ".join(str(v) for v in s["summary"])


def _fid_line(tree: Tree) -> str:
    f = tree.df("fid")
    if f is None or not len(f) or "comparison" not in f:
        return ""
    ok = f[f["status"].astype(str) == "ok"]
    if not len(ok):
        return "no arm had enough samples"
    med = ok.groupby("comparison")["fid"].median()
    arms = ok.pivot_table(index="arm", columns="comparison", values="fid")
    said = ", ".join(f"{k} {v:.3g}" for k, v in med.items())
    need = {"generated vs reconstruction", "reconstruction vs real"}
    if need <= set(arms.columns):
        both = arms.dropna(subset=list(need))
        lower = int((both["generated vs reconstruction"] < both["reconstruction vs real"]).sum())
        said += f"; generated vs reconstruction below reconstruction vs real in {lower} of {len(both)} arms"
    return f"median over {ok['arm'].nunique()} arms: {said}"


def _guidance_line(tree: Tree) -> str:
    g = tree.df("guidance")
    if g is None or not len(g) or "cfg_scale" not in g:
        return ""
    g = g[(g["status"].astype(str) == "ok") & (g["cfg_scale"].astype(str) != "real")]
    parts = []
    for name, grp in g.groupby("condition", sort=True):
        metric = "accuracy" if grp["kind"].iloc[0] == "classification" else "pearson_r"
        vals = pd.to_numeric(grp[metric], errors="coerce")
        if not vals.notna().any():
            continue
        best = grp.loc[vals.idxmax()]
        chance = f", chance {1 / float(best['n_values']):.2f}" if metric == "accuracy" else ""
        parts.append(f"{name} {metric} {float(best[metric]):.2f} at cfg {best['cfg_scale']}{chance}")
    return "best over scales: " + "; ".join(parts) if parts else ""


def _memorisation_line(tree: Tree) -> str:
    m = tree.df("memorisation")
    if m is None or not len(m) or "n_near_copies" not in m:
        return ""
    r = m.iloc[0]
    return (f"{int(r['n_near_copies'])} of {int(r['n_generated'])} samples flagged as near-copies; "
            f"generated closer to training than held-out scans: p = {float(r['p_generated_closer']):.2g}")


def _longitudinal_line(tree: Tree) -> str:
    lo = tree.df("longitudinal")
    if lo is None or not len(lo) or "age_change_pearson_r" not in lo:
        return ""
    pairs = tree.df("longitudinal_pairs")
    return "; ".join(f"{r['pairs']}: r = {age_r_text(r, pairs)} (n = {int(r['n_pairs'])} pairs)"
                     for _, r in lo.iterrows())


def _tokenizer_line(tree: Tree) -> str:
    r = tree.df("reconstruction_summary")
    parts = []
    if r is not None and {"metric", "mean"} <= set(r.columns):
        parts.append("reconstruction " + ", ".join(f"{m} {float(v):.3g}" for m, v in zip(r["metric"], r["mean"],
                                                                                          strict=True)))
    t = tree.df("tokenizers")
    if t is not None and "tokenizer" in t:
        parts.append(f"{len(t)} tokenizers compared ({', '.join(map(str, t['tokenizer']))})")
    return "; ".join(parts)


def headline(tree: Tree, check: pd.DataFrame) -> pd.DataFrame:
    """One row per result: ours beside the paper's, with the section it links to."""
    ok, failed, outliers = _qc_counts(tree)
    rows = [
        ("Honest check (planted effects)", f"{int(check['passed'].sum())} of {len(check)} checks pass"
         if len(check) else "", "(a check of this pipeline; not in the paper)", "honest-check"),
        ("Preprocessing", f"{ok} ok, {failed} failed, {outliers} outliers" if ok + failed else "",
         PAPER["qc"], "qc"),
        ("Linear probes", _probes_line(tree), PAPER["probes"], "probes"),
        ("Tokenizer", _tokenizer_line(tree), PAPER["tokenizer"], "tokenizer"),
        ("Decomposed 3D-FID", _fid_line(tree), PAPER["fid"], "generation"),
        ("Guidance recovery", _guidance_line(tree), PAPER["guidance"], "generation"),
        ("Memorisation", _memorisation_line(tree), PAPER["memorisation"], "generation"),
        ("Longitudinal age progression", _longitudinal_line(tree), PAPER["longitudinal"], "longitudinal"),
    ]
    return pd.DataFrame([{"result": a, "this run": b, "paper": c, "_anchor": d} for a, b, c, d in rows if b])


def headline_html(rows: pd.DataFrame) -> str:
    """The headline table; each result's name links to its section."""
    if not len(rows):
        return "<p class='note'>no evaluation table yet</p>"
    out = table(rows.drop(columns="_anchor"))
    for result, anchor in zip(rows["result"], rows["_anchor"], strict=True):
        out = out.replace(f"<td>{esc(result)}</td>", f'<td><a href="#sec-{esc(anchor)}">{esc(result)}</a></td>', 1)
    return out
