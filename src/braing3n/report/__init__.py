"""`braing3n report`: a run's results in one self-contained HTML page a person can read in a minute.

    braing3n report --configfile config/demo.yaml --out results/demo/report/index.html
    braing3n report --where --configfile config/demo.yaml      # where the report and tables are

The page opens with a summary (what was run; the headline numbers beside the paper's), then one
section per stage, each with its figures first, a short table of what matters and the full tables
folded with links to their CSV files (docs/evaluate.md#report). Tables are read from
{results}/tables/*.csv and {results}/qc/*.csv, figures from {results}/figures/, {results}/qc/ and
the per-scan QC pictures beside the scan records; images are embedded as data URIs, so the file can
be mailed or archived. No JavaScript. The page has no timestamp: rebuilding an unchanged run gives
the same bytes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from braing3n.report.build import build_report

__all__ = ["build_report", "main"]


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
