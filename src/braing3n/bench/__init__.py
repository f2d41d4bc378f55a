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
    "memory": "training memory per model and batch (estimate from a saved-tensor count)",
}
# not in `all` (the CPU-side set): its own targets, make gpu-check / gpu-check-demo, and out folder
SEPARATE = {"gpu-check": "every GPU figure in one call on one CUDA device (no GPU: a dry pass at tiny shapes)"}


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: braing3n bench {" + ",".join([*BENCHMARKS, *SEPARATE, "all"]) + "} [--out DIR] [options]")
        for name, help_ in {**BENCHMARKS, **SEPARATE}.items():
            print(f"  {name:<11} {help_}")
        return 0
    name, rest = argv[0], argv[1:]
    names = list(BENCHMARKS) if name == "all" else [name]
    if any(n not in BENCHMARKS and n not in SEPARATE for n in names):
        print(f"braing3n bench: unknown benchmark {name!r}", file=sys.stderr)
        return 2
    rc, done = 0, []
    for n in names:
        args = rest if n in ANCHORED or name != "all" else _without_anchor(rest)
        try:
            code = int(importlib.import_module(f"braing3n.bench.{n.replace('-', '_')}").main(args) or 0)
        except (OSError, RuntimeError, ValueError) as exc:  # one line; `all` goes on with the next one
            print(f"braing3n bench {n}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                  file=sys.stderr)
            code = 1
        done.append(f"{n}: {'ok' if code == 0 else 'failed'}")
        rc |= code
    if name == "all":
        print("braing3n bench all: " + ", ".join(done), file=sys.stderr)
    return rc


# the benchmarks that time a same-run reference (../shared/tools/gpu_anchor.py) and take --anchor
ANCHORED = ("tokenizer", "dit")


def _without_anchor(argv: list[str]) -> list[str]:
    """``all`` passes its options to every benchmark; only the anchored ones take --anchor."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--anchor":
            skip = True
        elif not a.startswith("--anchor="):
            out.append(a)
    return out
