"""One training engine for every model (MAE, decoder, DiT, DiT-long, AutoencoderKL).

A model plugs in as a ``Task`` (build_model / batches / loss, optional trainable_parameters,
model_config, export). ``fit`` does the rest: seeds, AdamW + warmup/cosine, gradient
accumulation, bf16 autocast on CUDA, optional torch.compile, DDP under torchrun/srun, EMA,
atomic checkpoints every ``ckpt_every`` steps with automatic resume, safetensors release
weights, metrics to CSV + TensorBoard and a tqdm bar.

Resume contract: ``batches(rank, world, seed, start_step)`` must yield the same micro-batches
for the same arguments; ``start_step`` counts micro-batches already consumed by this rank
(= optimiser step * grad_accum). Randomness inside ``loss`` must come from the global
python/numpy/torch RNGs (restored from the checkpoint). Then stopping at step k and resuming
reproduces the uninterrupted run exactly on CPU.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import json
import math
import random
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from braing3n.config import SPEED_ONLY_TRAIN_KEYS
from braing3n.train import checkpoint as ck
from braing3n.train.checkpoint import load_weights
from braing3n.train.distributed import any_rank, barrier, gather_objects, init_distributed, unwrap
from braing3n.train.ema import EMA
from braing3n.train.schedule import warmup_cosine

__all__ = ["TrainConfig", "Task", "fit", "load_weights", "release_weights", "train_config", "unwrap"]


@dataclass(kw_only=True)
class TrainConfig:
    """Engine settings: ``config['train']['engine']`` overlaid by ``config['train'][<model>]``.

    ``batch_size`` is per process (per GPU) and per micro-batch; the effective batch is
    ``batch_size * grad_accum * world_size``.
    """

    steps: int
    batch_size: int
    grad_accum: int = 1
    lr: float
    weight_decay: float = 0.05
    warmup_steps: int
    min_lr_ratio: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    ema_decay: float = 0.9999  # 0 = off
    bf16: bool = True  # autocast bf16 on cuda only
    compile: bool = False
    ckpt_every: int
    log_every: int
    seed: int
    num_workers: int
    grad_clip: float | None
    device: str = "auto"
    keep_checkpoints: int = 2
    extra: dict = field(default_factory=dict)  # model-specific keys of the section (preset, widths...)


def train_config(config: dict, model: str, **overrides) -> TrainConfig:
    """Build the TrainConfig of ``model`` (e.g. 'mae', 'dit_long') from a validated pipeline config.

    Keys of ``train.<model>`` that are TrainConfig fields override ``train.engine``; the other
    keys land in ``.extra``. ``seed`` and ``device`` default to the top-level ones.
    """
    train = config.get("train", {})
    names = {f.name for f in dataclasses.fields(TrainConfig)} - {"extra"}
    merged: dict[str, Any] = {"seed": config.get("seed", 0), "device": config.get("device", "auto")}
    merged.update({k: v for k, v in train.get("engine", {}).items() if k in names})
    section = train.get(model, {})
    merged.update({k: v for k, v in section.items() if k in names})
    merged.update(overrides)
    merged["extra"] = {k: v for k, v in section.items() if k not in names}
    if "betas" in merged:
        merged["betas"] = tuple(merged["betas"])
    required = [f.name for f in dataclasses.fields(TrainConfig)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [n for n in required if n not in merged]
    if missing:
        raise ValueError(f"train config for {model!r}: missing keys {missing} "
                         f"(set them in train.engine or train.{model})")
    return TrainConfig(**merged)


@runtime_checkable
class Task(Protocol):
    name: str

    def build_model(self) -> torch.nn.Module: ...

    def batches(self, rank: int, world: int, seed: int, start_step: int) -> Iterator[Any]: ...

    def loss(self, model: torch.nn.Module, batch: Any, device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
        """``model`` may be wrapped (DDP / compiled): call it; use ``unwrap(model)`` for attributes."""
        ...


def release_weights(out_dir: str | Path) -> Path:
    """The weights to use downstream: ``final_ema.safetensors`` when EMA was on, else ``final.safetensors``."""
    out_dir = Path(out_dir)
    ema = out_dir / "final_ema.safetensors"
    return ema if ema.exists() else out_dir / "final.safetensors"


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _optimizer(params: list[torch.nn.Parameter], cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    # No weight decay on biases, norms, embeddings' 1-d params, as in MAE/DiT.
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=cfg.betas,
                             fused=device.type == "cuda")


class _Metrics:
    """metrics.csv (rows after the resume step dropped) + TensorBoard, main rank only."""

    def __init__(self, out_dir: Path, start_step: int, enabled: bool):
        self.enabled, self.path, self.fields = enabled, out_dir / "metrics.csv", None
        self.tb = None
        if not enabled:
            return
        if self.path.exists():
            with open(self.path) as fh:
                rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= start_step]
            if rows:
                self.fields = list(rows[0].keys())
                with open(self.path, "w", newline="") as fh:
                    w = csv.DictWriter(fh, self.fields)
                    w.writeheader()
                    w.writerows(rows)
            else:
                self.path.unlink()
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out_dir / "tb"), purge_step=start_step + 1)
        except ImportError:  # tensorboard is a dependency; keep training if a site strips it
            self.tb = None

    def log(self, step: int, row: dict[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": step, **row}
        new = self.fields is None
        if new:
            self.fields = list(row.keys())
        with open(self.path, "a", newline="") as fh:
            w = csv.DictWriter(fh, self.fields, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)
        if self.tb is not None:
            for k, v in row.items():
                if k != "step":
                    self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


# Settings a checkpoint may be resumed under with other values: they do not change what is learnt.
_RESUME_FREE = SPEED_ONLY_TRAIN_KEYS


def run_key(task: Task, cfg: TrainConfig) -> str:
    """What a checkpoint must match to be resumed: the task, its model config, the optimisation
    settings and, when the task gives one (``data_key()``), a key of its training data. A retried
    or requeued job has the same key; a job rerun because its inputs or settings changed does not,
    and must start over instead of resuming the old run's weights."""
    train = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _RESUME_FREE}
    payload = {"task": task.name, "model": getattr(task, "model_config", lambda: {})(), "train": train,
               "data": getattr(task, "data_key", lambda: None)()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def autocast_for(cfg: TrainConfig, device: torch.device, cpu_bf16: bool = False):
    """bf16 autocast on CUDA when ``cfg.bf16``; on CPU only with ``cpu_bf16`` (the paper-size tests): a
    CPU without native bf16 (no AVX512-BF16/AMX) runs bf16 matmuls ~8x slower than float32."""
    if cfg.bf16 and (device.type == "cuda" or (cpu_bf16 and device.type == "cpu")):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def fit(task: Task, cfg: TrainConfig, out_dir: str | Path, stop_at: int | None = None,
        cpu_bf16: bool = False) -> Path:
    """Train ``task`` to ``cfg.steps`` optimiser steps in ``out_dir``, resuming from its latest checkpoint.

    ``stop_at`` ends this process early after that many total steps (checkpoint written), as a
    pre-empted job would; the next call continues. ``cpu_bf16``: bf16 autocast on CPU too (tests of
    the GPU path's dtypes). Returns the release weights path.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = out_dir / "checkpoints"
    di = init_distributed(cfg.device)
    device = di.device
    _seed_all(cfg.seed)  # same initial weights on every rank
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True  # fixed volume shapes: pick the fastest conv kernels once

    model = task.build_model().to(device)
    _seed_all(cfg.seed * 1000 + di.rank)  # per-rank stream for masking/noise inside loss()
    trainable = getattr(task, "trainable_parameters", None)
    params = list(trainable(model)) if trainable else [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"task {task.name}: no trainable parameters")
    opt = _optimizer(params, cfg, device)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: warmup_cosine(s, cfg.steps, cfg.warmup_steps, cfg.min_lr_ratio))
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None

    start = 0
    key = run_key(task, cfg)
    state = ck.load_latest(ckpt_dir)
    if state is not None:
        if state.get("task") != task.name:
            raise ValueError(f"{ckpt_dir}: checkpoints belong to task {state.get('task')!r}, not {task.name!r}")
        if state.get("run_key") != key:
            if di.is_main:
                print(f"engine: {task.name}: the checkpoints in {ckpt_dir} are from another run (settings or "
                      "training data changed): starting from step 0", file=sys.stderr)
                for old in ck.list_checkpoints(ckpt_dir):
                    Path(old).unlink(missing_ok=True)
            barrier()
            state = None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if ema is not None and state.get("ema") is not None:
            ema.load_state_dict(state["ema"])
        rngs = state["rng"]
        start = int(state["step"])
        if di.rank < len(rngs):
            ck.set_rng_state(rngs[di.rank])
        else:  # a rank the checkpointed run did not have: its own stream, not a copy of rank 0's masks/noise
            _seed_all((cfg.seed * 1000 + di.rank) * 1_000_003 + start)
        if di.is_main:
            print(f"engine: {task.name}: resumed from step {start} ({ckpt_dir})", file=sys.stderr)
            if len(rngs) != di.world:
                print(f"engine: {task.name}: the checkpoint ran on {len(rngs)} process(es), this job on {di.world}: "
                      f"the global batch changes from {cfg.batch_size * len(rngs)} to {cfg.batch_size * di.world} "
                      "volumes per micro-step and the run no longer equals an uninterrupted one", file=sys.stderr)

    run_model: torch.nn.Module = model
    if di.world > 1:
        run_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        run_model = torch.compile(run_model)
    autocast = autocast_for(cfg, device, cpu_bf16)

    def save(step: int) -> None:
        rngs = gather_objects(ck.rng_state())
        if di.is_main:
            ck.save_checkpoint({"task": task.name, "run_key": key, "step": step, "data_position": step * cfg.grad_accum,
                                "model": model.state_dict(), "optimizer": opt.state_dict(),
                                "scheduler": sched.state_dict(), "ema": ema.state_dict() if ema else None,
                                "rng": rngs, "train_config": json.dumps(dataclasses.asdict(cfg), default=str)},
                               ckpt_dir, step, keep=cfg.keep_checkpoints)
        barrier()

    end = cfg.steps if stop_at is None else min(cfg.steps, stop_at)
    stop_signal: dict[str, int | None] = {"n": None}
    old_handlers = _catch_signals(stop_signal)
    metrics = _Metrics(out_dir, start, di.is_main)
    batches = iter(task.batches(di.rank, di.world, cfg.seed, start * cfg.grad_accum))
    bar = None
    if di.is_main:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=start, desc=f"train {task.name}", disable=not sys.stderr.isatty())
    model.train()
    t0, seen, acc, last_log = time.perf_counter(), 0, {}, start
    for step in range(start, end):
        for micro in range(cfg.grad_accum):
            try:
                batch = next(batches)
            except StopIteration as exc:
                raise RuntimeError(f"task {task.name}: batches() ended at step {step}; it must be infinite") from exc
            sync = micro == cfg.grad_accum - 1 or di.world == 1
            ctx = contextlib.nullcontext() if sync else run_model.no_sync()
            with ctx:
                with autocast:
                    loss, info = task.loss(run_model, batch, device)
                (loss.float() / cfg.grad_accum).backward()
            lv = float(loss.detach())
            if not math.isfinite(lv):
                raise FloatingPointError(f"task {task.name}: non-finite loss {lv} at step {step} ({out_dir})")
            for k, v in {"loss": lv, **info}.items():
                acc[k] = acc.get(k, 0.0) + float(v) / cfg.grad_accum
            seen += cfg.batch_size * di.world
        if cfg.grad_clip:
            acc["grad_norm"] = acc.get("grad_norm", 0.0) + float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip))
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update(model)
        done = step + 1
        if bar is not None:
            bar.update(1)
        if done % cfg.log_every == 0 or done == cfg.steps:
            n = done - last_log
            dt = time.perf_counter() - t0
            row = {k: v / n for k, v in acc.items()}
            row.update(lr=sched.get_last_lr()[0], samples_per_s=seen / max(dt, 1e-9))
            metrics.log(done, row)
            if bar is not None:
                bar.set_postfix(loss=f"{row['loss']:.4g}")
            t0, seen, acc, last_log = time.perf_counter(), 0, {}, done
        if done % cfg.ckpt_every == 0 or done == end:
            save(done)
        elif (di.world == 1 or done % 10 == 0) and any_rank(stop_signal["n"] is not None, device):
            # pre-empted: keep the work done, exit non-zero so SLURM / snakemake rerun the job (the
            # cross-rank check syncs the GPU, so DDP runs look every 10 steps)
            save(done)
            metrics.close()
            _restore_signals(old_handlers)
            raise SystemExit(f"engine: {task.name}: stopped by signal at step {done}; checkpoint written, "
                             "rerun the same command to resume")
    metrics.close()
    _restore_signals(old_handlers)
    if bar is not None:
        bar.close()
    if end < cfg.steps:
        return out_dir / "final.safetensors"
    return _release(task, model, ema, cfg, out_dir, di.is_main)


# SLURM sends SIGTERM on pre-emption / time limit (SIGUSR1 with --signal=USR1@120, docs/slurm.md): checkpoint,
# then exit.
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


def _catch_signals(flag: dict) -> dict:
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum, frame):
        flag["n"] = signum

    return {s: signal.signal(s, handler) for s in _STOP_SIGNALS}


def _restore_signals(old: dict) -> None:
    for s, h in old.items():
        signal.signal(s, h)


def _release(task: Task, model: torch.nn.Module, ema: EMA | None, cfg: TrainConfig, out_dir: Path,
             is_main: bool) -> Path:
    final = out_dir / "final.safetensors"
    if is_main:
        model_config = getattr(task, "model_config", lambda: {})()
        meta = {"task": task.name, "steps": str(cfg.steps)}
        ck.save_weights(model.state_dict(), final, meta)
        if ema is not None:
            ck.save_weights(ema.weights(model), out_dir / "final_ema.safetensors", meta)
        else:  # an earlier run's EMA weights would otherwise be released (release_weights prefers them)
            (out_dir / "final_ema.safetensors").unlink(missing_ok=True)
        info = {"task": task.name, "model": model_config, "train": dataclasses.asdict(cfg),
                "weights": final.name, "release": release_weights(out_dir).name}
        tmp = out_dir / "config.json.tmp"
        tmp.write_text(json.dumps(info, indent=2, default=str))
        tmp.replace(out_dir / "config.json")
        export = getattr(task, "export", None)
        if export is not None:
            load_weights(model, release_weights(out_dir))
            model.eval()
            export(model, out_dir)
    barrier()
    return release_weights(out_dir)
