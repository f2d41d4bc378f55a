"""`braing3n manifest`: all cohort partitions -> training manifest, longitudinal pairs, dataset summary.

    braing3n manifest --configfile config/demo.yaml --partitions results/demo/metadata/cohort=*/part-0.parquet

Outputs (defaults under {results}): metadata/manifest.parquet (every scan, canonical schema),
metadata/pairs.parquet (same subject, two sessions, interval in years, baseline/follow-up
scan_id per modality), tables/dataset_summary.csv|md (scans and subjects per cohort x
diagnosis x modality) and tables/dataset_coverage.csv|md (% of scans with each field).
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd
import pyarrow as pa

from braing3n.metadata.schema import CLINICAL, MODALITIES

PAIR_COLUMNS = (["cohort", "subject_id", "split", "baseline_session", "followup_session", "baseline_days",
                 "followup_days", "interval_days", "interval_years", "age_baseline", "age_followup", "sex",
                 "diagnosis_baseline", "diagnosis_followup"]
                + [f"{when}_scan_id_{m}" for m in MODALITIES for when in ("baseline", "followup")])

PAIR_FLOATS = {"baseline_days", "followup_days", "interval_days", "interval_years", "age_baseline", "age_followup"}
PAIR_SCHEMA = pa.schema([(c, pa.float64() if c in PAIR_FLOATS else pa.string()) for c in PAIR_COLUMNS])


def sessions_table(manifest: pd.DataFrame) -> pd.DataFrame:
    """One row per (subject, session): days, age, diagnosis and the scan_id of each modality."""
    keys = ["subject_id", "session_id"]
    df = manifest.astype({c: object for c in ("sex", "diagnosis", "cohort", "split")})
    base = df.groupby(keys, sort=True).agg(  # first non-null value of the session's scans
        cohort=("cohort", "first"), split=("split", "first"), days=("days_from_baseline", "first"),
        age=("age", "first"), sex=("sex", "first"), diagnosis=("diagnosis", "first"))
    scans = df.drop_duplicates(keys + ["modality"]).pivot(index=keys, columns="modality", values="scan_id")
    scans = scans.reindex(columns=list(MODALITIES))
    out = base.join(scans).reset_index()
    return out.astype({m: object for m in MODALITIES}).where(out.notna(), None)


def longitudinal_pairs(manifest: pd.DataFrame) -> pd.DataFrame:
    """Every (earlier, later) session pair of a subject with known, distinct days from baseline."""
    ses = sessions_table(manifest)
    ses = ses[ses["days"].notna()].assign(days=lambda d: d["days"].astype("float64"))
    m = ses.merge(ses, on="subject_id", suffixes=("_a", "_b"))
    m = m[m["days_b"] > m["days_a"]].sort_values(["subject_id", "days_a", "days_b", "session_id_a", "session_id_b"])
    out = pd.DataFrame({
        "cohort": m["cohort_a"], "subject_id": m["subject_id"], "split": m["split_a"],
        "baseline_session": m["session_id_a"], "followup_session": m["session_id_b"],
        "baseline_days": m["days_a"], "followup_days": m["days_b"], "interval_days": m["days_b"] - m["days_a"],
        "interval_years": (m["days_b"] - m["days_a"]) / 365.25, "age_baseline": m["age_a"],
        "age_followup": m["age_b"], "sex": m["sex_a"].where(m["sex_a"].notna(), m["sex_b"]),
        "diagnosis_baseline": m["diagnosis_a"], "diagnosis_followup": m["diagnosis_b"],
    })
    for mod in MODALITIES:
        out[f"baseline_scan_id_{mod}"], out[f"followup_scan_id_{mod}"] = m[f"{mod}_a"], m[f"{mod}_b"]
    out = out.reset_index(drop=True)[PAIR_COLUMNS]
    for c in PAIR_FLOATS:
        out[c] = pd.to_numeric(out[c]).astype("float64")
    return out.astype({c: object for c in out.columns if out[c].dtype == object}).where(out.notna(), None)


def dataset_summary(manifest: pd.DataFrame) -> pd.DataFrame:
    """Scans and subjects per cohort x diagnosis x modality, with 'all' roll-ups (per cohort, per
    diagnosis across cohorts as in the paper's dataset section, per modality) and a grand total."""
    df = manifest.assign(diagnosis=manifest["diagnosis"].fillna("unknown").astype(str))
    n_ses = df.groupby("subject_id")["session_id"].nunique()
    longitudinal = set(n_ses.index[n_ses > 1])
    rows = []
    # cohort x diagnosis x modality, then roll-ups: per cohort, per diagnosis, per modality, total
    for keys in (["cohort", "diagnosis", "modality"], ["cohort"], ["diagnosis"], ["modality"], []):
        groups = df.groupby(keys, sort=True) if keys else [((), df)]
        for key, g in groups:
            key = key if isinstance(key, tuple) else (key,)
            row = {"cohort": "all", "diagnosis": "all", "modality": "all"}
            row.update(dict(zip(keys, key, strict=False)))
            subj = set(g["subject_id"])
            row.update(n_scans=len(g), n_subjects=len(subj), n_sessions=int(g[["subject_id", "session_id"]]
                       .drop_duplicates().shape[0]), n_longitudinal_subjects=len(subj & longitudinal))
            rows.append(row)
    return pd.DataFrame(rows)


def coverage_table(manifest: pd.DataFrame) -> pd.DataFrame:
    """Percentage of scans with a non-null value, per field, per cohort and overall."""
    rows = []
    for name, g in [*manifest.groupby("cohort", sort=True), ("all", manifest)]:
        row = {"cohort": name, "n_scans": len(g), "n_subjects": g["subject_id"].nunique()}
        row.update({f: round(100.0 * g[f].notna().mean(), 2) if len(g) else 0.0 for f in CLINICAL})
        rows.append(row)
    return pd.DataFrame(rows)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="braing3n manifest", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configfile", action="append", default=[], help="pipeline config (repeatable)")
    ap.add_argument("--partitions", nargs="+", required=True, help="cohort partitions (part-0.parquet)")
    ap.add_argument("--manifest", help="default {results}/metadata/manifest.parquet")
    ap.add_argument("--pairs", help="default {results}/metadata/pairs.parquet")
    ap.add_argument("--summary", help="default {results}/tables/dataset_summary.csv (+ .md)")
    ap.add_argument("--coverage", help="default {results}/tables/dataset_coverage.csv (+ .md)")
    args = ap.parse_args(argv)
    from braing3n.config import ConfigError, load_configs
    from braing3n.metadata.harmonise import read_partitions
    from braing3n.metadata.issues import HarmoniseError
    from braing3n.metadata.schema import ARROW_SCHEMA, coerce
    from braing3n.paths import Layout
    from braing3n.provenance import provenance, write_parquet, write_table

    try:
        config = load_configs(args.configfile) if args.configfile else {"results": "results", "seed": 0}
        manifest = read_partitions(args.partitions)
    except (ConfigError, HarmoniseError, ValueError, OSError) as exc:
        print(f"braing3n manifest: {exc}", file=sys.stderr)
        return 1
    layout = Layout(config["results"])
    pairs = longitudinal_pairs(manifest)
    prov = provenance({"metadata": config.get("metadata", {}), "cohorts": config.get("cohorts", {})},
                      seed=config.get("seed"), scans=len(manifest), subjects=int(manifest["subject_id"].nunique()),
                      pairs=len(pairs))
    write_parquet(coerce(manifest), args.manifest or layout.manifest, prov, ARROW_SCHEMA)
    write_parquet(pairs, args.pairs or layout.pairs, prov, PAIR_SCHEMA)
    write_table(dataset_summary(manifest), args.summary or layout.table("dataset_summary"), prov)
    write_table(coverage_table(manifest), args.coverage or layout.table("dataset_coverage"), prov)
    print(f"manifest: {len(manifest)} scans, {manifest['subject_id'].nunique()} subjects, "
          f"{manifest['cohort'].nunique()} cohorts; {len(pairs)} longitudinal pairs")
    return 0
