"""`braing3n bench gpu-check` (`make gpu-check`): every GPU figure README owes, in one call.

    braing3n bench gpu-check --out bench/gpu                 # one CUDA device, < 8 min
    braing3n bench gpu-check --demo --out bench/gpu          # the honest check on config/demo_gpu.yaml, < 10 min

Steps, each one table under ``--out`` with provenance (date, host, commit, packages):
- ``train_steps``: the MAE (ViT-B, 70 % masking, batch 32), CNN decoder (paper channels, batch 2)
  and DiT-XL (batch 16) train steps next to ../shared/tools/gpu_anchor.py's plain-PyTorch models
  at the same shapes, eager and torch.compile, interleaved in this process, ratio = anchor step
  time / ours (``braing3n.bench.anchor.time_pairs``);
- ``loader``: the store loader alone and feeding the MAE step at 4/8/16 workers, ratio to the step
  alone (a synthetic store of float16 volumes, page cache warm);
- ``hdbet``: HD-BET v1 ``fast`` and ``accurate`` seconds per head on the GPU (a head from
  ../shared/data when present, else a phantom T1);
- ``sample``: 16 volumes, 50 Heun steps with classifier-free guidance, decoded by the paper CNN
  decoder (random weights: the time, not the image), seconds and peak memory.
``--demo`` instead runs tests/test_demo_learning.py with config/demo_gpu.yaml (the honest check's
learning chain) and writes each test's outcome and the wall time to ``demo.csv``.

Without a CUDA device both say so in one line and exit 0 after a dry pass of every step at tiny
shapes (written under ``{out}/dry``), so CI proves the script itself runs: HD-BET's dry step checks
its weights and reads the head but skips the network (~2 min per call on a CPU core).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from braing3n.bench import anchor as gpu_anchor
from braing3n.config import REPO_ROOT

log = logging.getLogger("braing3n.bench.gpu_check")
DEFAULT_ANCHOR = REPO_ROOT.parent / "shared" / "tools" / "gpu_anchor.py"
DEFAULT_HEADS = [REPO_ROOT.parent / "shared" / "data" / "orientation" / "RAS.nii.gz",
                 REPO_ROOT.parent / "shared" / "data" / "ixi-t1-2mm" / "IXI132-HH-1415_T1.nii.gz"]
STEPS = ("train_steps", "loader", "hdbet", "sample")
DRY_IMG = (32, 48, 32)  # the dry pass's image: a 2x3x2 token grid


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _write(df: pd.DataFrame, out: Path, name: str, dry: bool) -> Path:
    from braing3n.provenance import provenance, write_table

    df = df.copy()
    df.insert(0, "dry_pass", dry)
    path = out / f"{name}.csv"
    write_table(df, path, gpu_anchor.stamp(provenance(None, seed=0)))
    log.info("gpu-check %s: %d rows -> %s", name, len(df), path)
    return path


def train_steps(anchor_path: str, device: torch.device, dry: bool, rounds: int) -> pd.DataFrame:
    """Our three train steps next to the anchor's, eager and compiled (dry without the anchor file:
    ours alone, no ratio)."""
    from braing3n.bench import dit, tokenizer
    from braing3n.models.decoder import decoder_config
    from braing3n.models.dit import DiTConfig
    from braing3n.models.mae import mae_config

    have = Path(anchor_path).is_file()
    if not have:
        log.warning("gpu-check train_steps: %s not found: our steps alone, no ratio (dry pass)", anchor_path)
    mod = gpu_anchor.load_module(anchor_path) if have else _NoAnchor()
    if dry:  # tiny shapes; "compiled" traces with dynamo's eager backend (no inductor build on CPU)
        mae_cfg, dec_cfg = mae_config("tiny", img_size=DRY_IMG), decoder_config("tiny", channels=(16, 16, 8, 8, 8))
        dit_cfg = DiTConfig.from_preset("tiny", grid=mae_cfg.grid, categorical=dit.CATS, continuous=dit.CONT)
        sizes, warm = (1, 1, 1), 0  # no warm-up: the one timed step proves the path (and traces)
    else:
        mae_cfg, dec_cfg = mae_config("vitb"), decoder_config("paper")
        dit_cfg = DiTConfig.from_preset("paper", categorical=dit.CATS, continuous=dit.CONT)
        sizes, warm = (32, 2, 16), 3
    pairs = []
    compile_ctx = _eager_compile() if dry else contextlib.nullcontext()
    with compile_ctx:
        for compiled in (False, True):
            pairs += tokenizer.anchor_pairs(mod, device, mae_cfg, dec_cfg, sizes[0], sizes[1], compiled=compiled)
            pairs.append(dit.anchor_pair(mod, dit_cfg, sizes[2], device, compiled=compiled))
        if not have:
            for pair in pairs:
                pair.anchor = None
        rows = gpu_anchor.time_pairs(pairs, rounds, warm=warm, sync=lambda: _sync(device))
    return gpu_anchor.table(rows, device, anchor_path if have else "absent")


class _NoAnchor:
    """Stands in for the anchor module where its file is absent (the pairs' anchor sides are dropped)."""

    def __getattr__(self, name):
        raise OSError("the GPU anchor is absent")


@contextlib.contextmanager
def _eager_compile():
    """torch.compile -> dynamo tracing with the eager backend: the compile path without a C++ build."""
    real = torch.compile
    torch.compile = lambda m, **kw: real(m, backend="eager", **kw)
    try:
        yield
    finally:
        torch.compile = real
        torch._dynamo.reset()


def loader(device: torch.device, dry: bool, steps: int) -> pd.DataFrame:
    from braing3n.bench import tokenizer
    from braing3n.data.loader import train_batches, zscore
    from braing3n.models.mae import mae_config

    cfg = mae_config("tiny" if dry else "vitb")
    batch, workers, n_vol = (2, (1,), 4) if dry else (32, (4, 8, 16), 96)
    warm = 0 if dry else 3
    rows = []
    with tempfile.TemporaryDirectory(prefix="braing3n-gpu-check-") as tmp:
        ds = tokenizer.make_store(Path(tmp), n_vol)
        alone = tokenizer.bench_mae(cfg, batch, device, False, steps, warm)
        rows.append({**alone, "workers": None, "ratio_to_step_alone": 1.0})
        for w in workers:
            rows.append(tokenizer.bench_loader(ds, batch, w, device, steps))
            it = train_batches(ds, batch, 0, 1, 0, 0, w, device)
            fed = tokenizer.bench_mae(cfg, batch, device, False, steps, warm, name="mae+loader",
                                      batch_fn=lambda it=it: zscore(next(it).to(device, non_blocking=True)))
            rows.append({**fed, "workers": w, "ratio_to_step_alone": fed["vol_per_s"] / alone["vol_per_s"]})
            del it
    df = pd.DataFrame(rows)
    df.insert(1, "preset", "tiny" if dry else "vitb")
    return df


def _head(tmp: Path, dry: bool) -> tuple[str, str]:
    """(path, label) of a T1 head: ../shared/data when present, else a phantom (dry: a synthetic box)."""
    for p in DEFAULT_HEADS:
        if p.exists():
            return str(p), p.name
    if dry:
        import ants

        vol = np.zeros((24, 24, 24), np.float32)
        vol[4:20, 4:20, 4:20] = 100
        path = tmp / "box.nii.gz"
        ants.image_write(ants.from_numpy(vol, spacing=(4.0, 4.0, 4.0)), str(path))
        return str(path), "synthetic 24^3 box (dry)"
    from braing3n.phantom.generate import generate_cohort
    from braing3n.phantom.plan import plan_cohort

    spec = {"mapping": str(REPO_ROOT / "config/cohorts/phantommem.yaml"), "root": str(tmp / "raw"),
            "phantom": {"style": "adni", "n_subjects": 1, "n_longitudinal": 0, "modalities": {"T1": 1},
                        "voxel_sizes": {"2": 1}, "orientations": {"PSR": 1}}}
    plan = plan_cohort("gpucheck", spec, {"phantom": {"seed": 3}, "seed": 0})
    generate_cohort(plan, {"phantom": {"seed": 3}, "seed": 0}, log=lambda *a: None)
    return str(plan.scans[0].path), "phantom T1 (2 mm, PSR)"


def hdbet(device: torch.device, dry: bool, repeats: int) -> pd.DataFrame:
    from braing3n.preprocess.io import read_scan
    from braing3n.preprocess.skullstrip import MODES, check_v1_weights, hdbet_v1
    from braing3n.preprocess.weights import verify_v1_weights

    rows = []
    with tempfile.TemporaryDirectory(prefix="braing3n-gpu-check-") as tmp:
        path, label = _head(Path(tmp), dry)
        img = read_scan(path)
        for mode in MODES:
            check_v1_weights(mode)
            verify_v1_weights(mode)
            row = {"mode": mode, "head": label, "shape": "x".join(map(str, img.shape)),
                   "device": "cpu (dry)" if dry else torch.cuda.get_device_name(device)}
            if dry:  # the forward pass is ~2 min per call on a CPU core
                rows.append({**row, "ran_network": False, "s_per_head": float("nan"), "brain_ml": float("nan")})
                continue
            hdbet_v1(img, mode, "cuda")  # warm-up: cuDNN autotuning and weight loading
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(repeats):
                mask = hdbet_v1(img, mode, "cuda")
            _sync(device)
            rows.append({**row, "ran_network": True, "s_per_head": (time.perf_counter() - t0) / repeats,
                         "brain_ml": float(mask.sum() * np.prod(img.spacing) / 1000)})
    return pd.DataFrame(rows)


def sample(device: torch.device, dry: bool) -> pd.DataFrame:
    from braing3n.bench import dit
    from braing3n.models.dit import DiTConfig

    cfg = DiTConfig.from_preset("tiny" if dry else "paper", categorical=dit.CATS, continuous=dit.CONT)
    n, steps = (2, 2) if dry else (16, 50)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    row = dit.sample_throughput(cfg, n, steps, device, dit.RandomDecoder("tiny" if dry else "paper", device))
    row["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    row["total_s"] = row["sample_s"] + row["decode_s"]
    return pd.DataFrame([{"model": f"dit-{'tiny' if dry else 'paper'}", "solver": "heun", "steps": steps, **row}])


def demo(out: Path, dry: bool, overlay: str) -> pd.DataFrame:
    """The honest check's learning chain (tests/test_demo_learning.py) on ``overlay``; dry: the merged
    config loads, the overlay's MAE task takes one step at its tiny preset, and the tests collect."""
    test = REPO_ROOT / "tests" / "test_demo_learning.py"
    env = {**os.environ, "BRAING3N_DEMO_TEST": "1", "BRAING3N_DEMO_OVERLAY": overlay}
    t0 = time.perf_counter()
    if dry:
        from braing3n.bench.paper import base_config, make_task, write_store

        with tempfile.TemporaryDirectory(prefix="braing3n-gpu-check-") as tmp:
            write_store(tmp)  # the overlay's MAE section, tiny preset, one CPU step
            config = base_config(tmp, [REPO_ROOT / "config" / "demo.yaml", REPO_ROOT / overlay])
            task = make_task("mae-vitb", config, tiny=True, device="cpu", batch_size=1, num_workers=0,
                             bf16=False).task
            torch.manual_seed(0)
            model = task.build_model()
            loss, _ = task.loss(model, next(iter(task.batches(0, 1, 0, 0))), torch.device("cpu"))
            loss.backward()
            if not torch.isfinite(loss):
                raise RuntimeError(f"{overlay}: the MAE's dry step gave a non-finite loss")
        cmd = [sys.executable, "-m", "pytest", "-q", "--collect-only", str(test)]
    else:
        junit = out / "demo-junit.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-rA", f"--junitxml={junit}", str(test)]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    rows = _pytest_rows(proc.stdout, dry)
    if not rows:
        raise RuntimeError(f"{test}: pytest ran no test (exit {proc.returncode}): "
                           f"{(proc.stdout + proc.stderr).strip().splitlines()[-1:]}")
    df = pd.DataFrame(rows)
    df["overlay"], df["wall_s"], df["pytest_exit"] = overlay, wall, proc.returncode
    return df


def _pytest_rows(stdout: str, dry: bool) -> list[dict]:
    """Per test: (test, outcome) from ``pytest -rA`` summary lines, or the collected ids (dry)."""
    rows = []
    for line in stdout.splitlines():
        if dry and "::" in line and not line.startswith(("=", " ")):
            rows.append({"test": line.strip().split("::", 1)[1], "outcome": "collected"})
        elif not dry and line.split(" ", 1)[0] in ("PASSED", "FAILED", "XFAIL", "XPASS", "ERROR", "SKIPPED"):
            outcome, _, rest = line.partition(" ")
            rows.append({"test": rest.split("::", 1)[-1].split(" - ")[0], "outcome": outcome})
    return rows


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="braing3n bench gpu-check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench/gpu")
    p.add_argument("--anchor", default=str(DEFAULT_ANCHOR), help="gpu_anchor.py (the plain-PyTorch reference)")
    p.add_argument("--demo", action="store_true", help="the honest check's learning chain instead (< 10 min)")
    p.add_argument("--overlay", default="config/demo_gpu.yaml", help="--demo: the config overlay")
    p.add_argument("--only", default=",".join(STEPS), help=f"comma-separated subset of {','.join(STEPS)}")
    p.add_argument("--rounds", type=int, default=5, help="interleaved timed steps per side (train_steps)")
    p.add_argument("--dry", action="store_true", help="the dry pass at tiny shapes even with a GPU")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    dry = args.dry or not torch.cuda.is_available()
    out = Path(args.out) / "dry" if dry else Path(args.out)
    if not torch.cuda.is_available():
        log.warning("braing3n bench gpu-check: no CUDA device present: dry pass of every step at tiny shapes "
                    "(-> %s); the GPU figures stay owed until this runs on a GPU", out)
    device = torch.device("cuda", 0) if not dry else torch.device("cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    out.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    if dry:  # tiny steps: one thread, no OpenMP barriers thrashing on a shared machine
        torch.set_num_threads(1)
    try:
        if args.demo:
            _write(demo(out, dry, args.overlay), out, "demo", dry)
        else:
            _run_steps(args, device, dry, out)
    finally:
        torch.set_num_threads(threads)
    return 0


def _run_steps(args, device: torch.device, dry: bool, out: Path) -> None:
    wanted = [s for s in args.only.split(",") if s]
    if unknown := sorted(set(wanted) - set(STEPS)):
        raise ValueError(f"--only: unknown step(s) {unknown}; choose from {list(STEPS)}")
    if "train_steps" in wanted and not dry and not Path(args.anchor).is_file():
        raise OSError(f"{args.anchor}: GPU anchor not found (give --anchor PATH to gpu_anchor.py)")
    t_all = time.perf_counter()
    for name in wanted:
        t0 = time.perf_counter()
        if name == "train_steps":
            df = train_steps(args.anchor, device, dry, 1 if dry else args.rounds)
        elif name == "loader":
            df = loader(device, dry, 1 if dry else 10)
        elif name == "hdbet":
            df = hdbet(device, dry, 1)
        else:
            df = sample(device, dry)
        _write(df, out, name, dry)
        log.info("gpu-check %s: %.1f s", name, time.perf_counter() - t0)
    log.info("gpu-check: %s in %.1f s", ", ".join(wanted), time.perf_counter() - t_all)
