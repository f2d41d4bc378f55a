"""Run ../shared/tools/gpu_anchor.py (the plain-PyTorch speed reference) eager and compiled.

Benchmarks report ratios against this anchor measured on the same machine in the same run,
so a shared or throttled GPU moves both numbers together.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys


def run_anchor(path: str, models: list[str], caller: str, timeout_s: int = 1800) -> list[dict]:
    """JSON records of ``gpu_anchor.py <models...>`` with COMPILE=0 then 1 (records naming a model only).

    A failing anchor prints its last error line to stderr, prefixed by ``caller``, and adds no rows.
    """
    records = []
    for comp in ("0", "1"):
        out = subprocess.run([sys.executable, path, *models], capture_output=True, text=True,
                             env={**os.environ, "COMPILE": comp}, timeout=timeout_s)
        for line in out.stdout.splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # the anchor's own progress lines
            if isinstance(rec, dict) and "model" in rec:
                records.append(rec)
        if out.returncode:
            print(f"{caller}: anchor {path} failed: {out.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
    return records
