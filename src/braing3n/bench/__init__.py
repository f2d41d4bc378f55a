"""`braing3n bench NAME`: benchmarks. Each lives in ``braing3n.bench.<name>`` with ``main(argv)``
and writes its table under ``--out`` (default ``bench/``). ``all`` runs every one in turn."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "preprocess": "per-scan preprocessing steps vs the naive library-default chain",
    "tokenizer": "MAE / decoder step throughput and the loader's throughput",
    "dit": "DiT training and sampling throughput",
    "dag": "snakemake -n all on a paper-sized (35,309-scan) synthetic manifest",
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: braing3n bench {" + ",".join([*BENCHMARKS, "all"]) + "} [--out DIR] [options]")
        for name, help_ in BENCHMARKS.items():
            print(f"  {name:<11} {help_}")
        return 0
    name, rest = argv[0], argv[1:]
    names = list(BENCHMARKS) if name == "all" else [name]
    if any(n not in BENCHMARKS for n in names):
        print(f"braing3n bench: unknown benchmark {name!r}", file=sys.stderr)
        return 2
    rc = 0
    for n in names:
        rc |= int(importlib.import_module(f"braing3n.bench.{n}").main(rest) or 0)
    return rc
