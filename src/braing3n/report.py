"""`braing3n report`: every table and figure of a run in one self-contained HTML file.

    braing3n report --configfile config/demo.yaml --out results/demo/report/index.html
    braing3n report --where --configfile config/demo.yaml      # where the report and tables are

Tables are read from {results}/tables/*.csv (their provenance footer is shown under each),
figures from {results}/figures/*.png, {results}/qc/*.png and the sample mosaics under
{results}/samples/; images are embedded as base64 so the file can be mailed or archived.
The page has no timestamp: rebuilding an unchanged run gives the same bytes.
"""

from __future__ import annotations

import argparse
import base64
import html
import sys
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd

from braing3n.provenance import provenance, read_table, write_table

# section title -> table-name prefixes, in page order; tables matching none go to "Other tables"
SECTIONS = [
    ("Honest check", ("honest_check",)),
    ("Encoder comparison", ("encoder_summary", "encoder_comparison")),
    ("Linear probes", ("probes_",)),
    ("Tokenizer vs AutoencoderKL", ("tokenizers",)),
    ("Decomposed 3D-FID", ("fid",)),
    ("Guidance sweep", ("guidance",)),
    ("Memorisation", ("memorisation",)),
    ("Longitudinal forecasts", ("longitudinal",)),
]


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
    sit at the ceiling on an easy effect, so a tie there is no failure).
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
                               f"(0.05 over {len(KNOWN_EFFECTS)} effects)"})
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


def _img(path: Path, title: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return (f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(title)}</figcaption></figure>")


def _prov_text(prov: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in prov.items() if k != "packages")


def _table_html(name: str, df: pd.DataFrame, prov: dict, max_rows: int, rel: str) -> str:
    shown = df.head(max_rows)
    more = f"<p>showing {max_rows} of {len(df)} rows</p>" if len(df) > max_rows else ""
    prov_txt = _prov_text(prov)
    # names come from cohort/encoder names in the config: escaped as text, percent-quoted in links
    esc, href = html.escape(name), html.escape(quote(f"{rel}/{name}"))
    return (f'<h3 id="{esc}">{esc}</h3>'
            f"{shown.to_html(index=False, na_rep='', float_format=lambda v: f'{v:.4g}', border=0)}{more}"
            f'<p class="prov">files: <a href="{href}.csv">{esc}.csv</a> · '
            f'<a href="{href}.md">{esc}.md</a><br>provenance: {html.escape(prov_txt)}</p>')


def of_this_run(config: dict, root: Path, path: Path) -> bool:
    """False for a leftover of an earlier config in the shared results tree: the probes of an
    encoder no longer compared, the samples of a removed arm, the QC of a disabled cohort. The
    report is of this config's run; such files stay on disk but out of the page."""
    rel = path.relative_to(root).parts
    ev = config.get("evaluate", {})
    if rel[0] == "tables" and path.stem.startswith(("probes_", "probe_predictions_")):
        encoder = path.stem.removeprefix("probe_predictions_").removeprefix("probes_")
        return encoder in {ev.get("reference_encoder", "mae"), "mae", *ev.get("baselines", ["random_vit"])}
    if rel[0] == "samples" and "generate" in config:
        return rel[1] in {*config["generate"].get("arms", {}), "forecast"}
    if rel[0] == "qc" and "cohorts" in config:
        cohort = path.stem.removesuffix("_qc_montage").removesuffix("_qc")
        return cohort in {c for c, spec in config["cohorts"].items() if spec.get("enabled", True)}
    return True


def figures(root: Path) -> list[tuple[Path, str]]:
    """Every figure of the run, deterministic order: figures/, qc/, then sample mosaics."""
    out = [(p, p.stem) for p in sorted((root / "figures").glob("*.png"))]
    out += [(p, f"QC: {p.stem}") for p in sorted((root / "qc").glob("*.png"))]
    out += [(p, f"samples: {p.parent.relative_to(root)}") for p in sorted((root / "samples").rglob("mosaic.png"))]
    return out


def build_report(config: dict, out: str | Path) -> Path:
    root = Path(config.get("results", "results"))
    rep = config.get("report", {})
    out = Path(out)
    tables = root / "tables"
    check = honest_check(tables, config.get("evaluate", {}).get("reference_encoder", "mae"))
    rel = Path(*([".."] * len(out.parent.relative_to(root).parts)), "tables").as_posix() \
        if out.parent.is_relative_to(root) else str(tables.resolve())
    parts = [f"<h1>{html.escape(rep.get('title', 'BrainG3N evaluation report'))}</h1>",
             f"<p>results: {html.escape(str(root))}</p>"]
    # the check is a table too: written with provenance before the page that shows it
    check_prov = provenance(config, seed=config.get("seed"), checks=len(check))
    write_table(check, out.parent / "honest_check.csv", check_prov)
    if len(check):
        prov_txt = _prov_text(check_prov)
        parts.append("<h2>Honest check (known phantom effects)</h2>" + check.to_html(index=False, border=0)
                     + f'<p class="prov">files: honest_check.csv · honest_check.md<br>provenance: '
                     f"{html.escape(prov_txt)}</p>")
    names = sorted(p.stem for p in tables.glob("*.csv") if of_this_run(config, root, p))
    done: set[str] = set()
    for title, prefixes in SECTIONS[1:]:
        mine = [n for n in names if n.startswith(prefixes) and n not in done]
        if not mine:
            continue
        parts.append(f"<h2>{html.escape(title)}</h2>")
        for n in mine:
            df, prov = read_table(tables / f"{n}.csv")
            parts.append(_table_html(n, df, prov, rep.get("max_rows", 200), rel))
            done.add(n)
    rest = [n for n in names if n not in done]
    if rest:
        parts.append("<h2>Other tables</h2>")
        for n in rest:
            df, prov = read_table(tables / f"{n}.csv")
            parts.append(_table_html(n, df, prov, rep.get("max_rows", 200), rel))
    qc = sorted(p for p in (root / "qc").glob("*.csv") if of_this_run(config, root, p))
    if qc:
        parts.append("<h2>Quality control</h2>")
        qc_rel = rel.rsplit("/", 1)[0] + "/qc" if "/" in rel else str((root / "qc").resolve())
        for path in qc:
            df, prov = read_table(path)
            parts.append(_table_html(path.stem, df, prov, rep.get("max_rows", 200), qc_rel))
    figs = [(p, t) for p, t in figures(root) if of_this_run(config, root, p)]
    if figs:
        parts.append("<h2>Figures</h2>" + "".join(_img(p, t) for p, t in figs))
    style = ("body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}table{border-collapse:collapse;"
             "font-size:12px}td,th{padding:2px 6px;border-bottom:1px solid #ddd}.prov{font-size:10px;color:#666}"
             "img{max-width:100%}figure{display:inline-block;margin:8px}")
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>BrainG3N report</title><style>{style}</style>"
            f"</head><body>{''.join(parts)}</body></html>\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(".tmp." + out.name)
    tmp.write_text(page)
    tmp.replace(out)
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="braing3n report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configfile", action="append", required=True)
    p.add_argument("--out", help="HTML file (default {results}/report/index.html)")
    p.add_argument("--where", action="store_true", help="print where the report and tables are, build nothing")
    args = p.parse_args(argv)
    from braing3n.config import ConfigError, load_configs

    try:
        config = load_configs(args.configfile)
    except ConfigError as exc:
        print(f"braing3n report: {exc}", file=sys.stderr)
        return 2
    root = Path(config.get("results", "results"))
    out = Path(args.out or root / "report" / "index.html")
    if args.where:
        tables = sorted((root / "tables").glob("*.csv"))
        state = "" if out.exists() else "  (not built yet: run the pipeline or `braing3n report`)"
        print(f"report:  {out}{state}\ntables:  {root / 'tables'}/ ({len(tables)} CSV + Markdown)\n"
              f"figures: {root / 'figures'}/")
        return 0
    path = build_report(config, out)
    print(f"braing3n report: {path}")
    return 0
