"""`braing3n harmonise`: one cohort's metadata -> its Parquet partition + issues report.

    braing3n harmonise --configfile config/demo.yaml --cohort phantommem
    braing3n harmonise --cohort IXI --mapping config/cohorts/ixi.yaml --root /data/IXI --out m.parquet
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from braing3n.config import ConfigError, load_configs, validate_config
from braing3n.paths import Layout
from braing3n.provenance import provenance, write_table


def settings_from_config(config: dict, strict: bool | None = None, seed: int | None = None):
    from braing3n.metadata.harmonise import Settings

    meta = config.get("metadata", {})
    return Settings(
        strict=meta.get("strict", False) if strict is None else strict,
        seed=seed if seed is not None else meta.get("seed") if meta.get("seed") is not None else config.get("seed", 0),
        val_fraction=meta.get("val_fraction", 0.15),
        test_fraction=meta.get("test_fraction", 0.15),
    )


def issues_path(results: str, cohort: str) -> str:
    return f"{results}/metadata/issues/{cohort}.csv"


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="braing3n harmonise", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configfile", action="append", default=[], help="pipeline config (repeatable, later wins)")
    ap.add_argument("--cohort", required=True, help="cohort name (a key of config cohorts)")
    ap.add_argument("--mapping", help="cohort mapping YAML (default: from the config)")
    ap.add_argument("--root", help="cohort raw root (default: from the config)")
    ap.add_argument("--out", help="partition Parquet (default: {results}/metadata/cohort={cohort}/part-0.parquet)")
    ap.add_argument("--issues", help="issues CSV (default: {results}/metadata/issues/{cohort}.csv)")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--strict", dest="strict", action="store_true", default=None,
                      help="fail on the first bad value (file, row, column, value)")
    mode.add_argument("--lenient", dest="strict", action="store_false", help="null bad values, report them")
    ap.add_argument("--seed", type=int, help="split seed (default: metadata.seed, else the global seed)")
    return ap


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    from braing3n.metadata.discover import mapping_path
    from braing3n.metadata.harmonise import harmonise_cohort, write_partition
    from braing3n.metadata.issues import HarmoniseError

    try:
        config = load_configs(args.configfile) if args.configfile else validate_config(
            {"cohorts": {args.cohort: {"mapping": args.mapping or "", "root": args.root or ""}}})
        spec = config["cohorts"].get(args.cohort)
        if spec is None:
            raise ConfigError(f"cohort {args.cohort!r} is not in the config (cohorts: {', '.join(config['cohorts'])})")
        mapping, root = args.mapping or spec["mapping"], args.root or spec["root"]
        settings = settings_from_config(config, args.strict, args.seed)
        layout = Layout(config["results"])
        out = args.out or layout.metadata_partition(args.cohort)
        issues_csv = args.issues or issues_path(config["results"], args.cohort)
        df, log = harmonise_cohort(args.cohort, mapping, root, settings)
    except (ConfigError, HarmoniseError, ValueError, OSError) as exc:
        print(f"braing3n harmonise: {exc}", file=sys.stderr)
        return 1
    section = {"metadata": config.get("metadata", {}), "cohort": {args.cohort: spec},
               "mapping_text": Path(mapping_path(mapping)).read_text()}
    prov = provenance(section, seed=settings.seed, scans=len(df), subjects=int(df["subject_id"].nunique()),
                      issues=len(log.issues))
    write_table(log.frame(), issues_csv, prov, markdown=False)
    write_partition(df, out, prov)
    counts = ", ".join(f"{k}={v}" for k, v in log.counts().items()) or "none"
    print(f"{args.cohort}: {len(df)} scans, {df['subject_id'].nunique()} subjects -> {out}; issues: {counts}")
    return 0
