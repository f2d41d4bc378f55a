"""Run ../shared/tools/gpu_anchor.py (the plain-PyTorch speed reference) eager and compiled.

Benchmarks report ratios against this anchor measured on the same machine in the same run,
so a shared or throttled GPU moves both numbers together.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass


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


def load_module(path: str):
    """The anchor script as a module (its model classes, no run): the reference models in-process."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("braing3n_gpu_anchor", path)
    if spec is None or spec.loader is None:
        raise OSError(f"{path}: not a Python file")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for name in ("MAE", "DiT", "Dec"):
        if not hasattr(mod, name):
            raise ValueError(f"{path}: no class {name} (not the BrainG3N GPU anchor?)")
    return mod


def anchor_step(model, inputs: tuple, bf16: bool = False):
    """One train step exactly as gpu_anchor.py's ``bench`` runs it (squared output, AdamW)."""
    import torch

    device = next(model.parameters()).device
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(*inputs).float().pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


@dataclass
class Pair:
    """The project's train step and the anchor's at the same shapes: factories of step closures
    (each builds its model, optimiser and inputs; dropping the closure frees them)."""

    name: str
    shape: str
    project: Callable[[], Callable[[], None]]
    anchor: Callable[[], Callable[[], None]] | None  # None: no anchor file (the project's side alone)
    differences: str
    hold_both: bool = True  # False: the two do not fit in memory together, each is rebuilt per round


def time_pairs(pairs: list[Pair], rounds: int = 3, warm: int = 1, sync=lambda: None) -> list[dict]:
    """Interleaved timing: per round one step of each side, the order alternating (ABBA...), so
    load from other processes on a shared machine hits both alike. ``ratio`` = anchor step time /
    project step time (the project's throughput as a fraction of plain PyTorch's), from medians;
    ``ratio_best`` from each side's fastest step."""
    import gc
    import statistics

    def one(step) -> float:
        sync()
        t0 = time.perf_counter()
        step()
        sync()
        return time.perf_counter() - t0

    rows = []
    for pair in pairs:
        times: dict[str, list[float]] = {"project": [], "anchor": []}
        factories = {"project": pair.project, "anchor": pair.anchor}
        if pair.anchor is None:
            del factories["anchor"]
        steps = {}
        if pair.hold_both:
            steps = {k: f() for k, f in factories.items()}
            for k in steps:
                for _ in range(warm):
                    steps[k]()
        for r in range(rounds):
            for side in (("project", "anchor") if r % 2 == 0 else ("anchor", "project")):
                if side not in factories:
                    continue
                if pair.hold_both:
                    times[side].append(one(steps[side]))
                    continue
                step = factories[side]()
                for _ in range(warm):
                    step()
                times[side].append(one(step))
                del step
                gc.collect()
        steps.clear()
        gc.collect()
        nan = float("nan")
        p = statistics.median(times["project"])
        a = statistics.median(times["anchor"]) if times["anchor"] else nan
        rows.append({"model": pair.name, "shape": pair.shape, "rounds": rounds,
                     "project_step_s": p, "anchor_step_s": a, "ratio": a / p,
                     "ratio_best": min(times["anchor"]) / min(times["project"]) if times["anchor"] else nan,
                     "project_steps_s": " ".join(f"{t:.3g}" for t in times["project"]),
                     "anchor_steps_s": " ".join(f"{t:.3g}" for t in times["anchor"]),
                     "differences": pair.differences})
        logging.getLogger(__name__).info("%s: project %.3g s, anchor %.3g s, ratio %.3f", pair.name, p, a, a / p)
    return rows


def table(rows: list[dict], device, path: str):
    """``time_pairs`` rows with the device, precision and anchor file named."""
    import pandas as pd
    import torch

    df = pd.DataFrame(rows)
    gpu = getattr(device, "type", str(device)) == "cuda"
    df.insert(1, "device", torch.cuda.get_device_name(device) if gpu else f"cpu x{torch.get_num_threads()}")
    df.insert(2, "precision", "bf16 autocast" if gpu else "float32")
    df["anchor"] = os.path.basename(path)
    return df


def stamp(prov: dict) -> dict:
    """Provenance plus the date and host: a benchmark is a measurement at a time, on a machine."""
    import datetime
    import platform

    return {**prov, "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "host_cpus": len(os.sched_getaffinity(0)), "machine": platform.machine()}
