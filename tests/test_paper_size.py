"""The paper-size training path runs on CPU (issue #19 section 1).

Each model is built as `braing3n train NAME` builds it from config/config.yaml
(braing3n.bench.paper: the CLI's task factories on a synthetic store and synthetic latents) and
takes one optimiser step of its real task loss at batch 1 through ``braing3n.train.engine.fit``:
AdamW, gradient clipping, EMA, checkpoint write, release weights. Asserted: a finite loss, a
gradient on every trainable parameter and none on a frozen one (read by an optimiser pre-step
hook, i.e. after clipping), the clipped norm, the checkpoint equal bit for bit to the released
trained weights (final.safetensors), the live optimiser state and the EMA, and a second ``fit``
that resumes from it rewriting identical release weights (tensors bit for bit and metadata).

Precision and size, measured on the 2-core development machine (2026-12-08, shared with other
jobs: wall times are ~2-3x a free machine's, CPU seconds are the comparable figure):
- bf16 autocast on this CPU (AVX2, no native bf16) is far slower than float32 at paper size: one
  ViT-B MAE step took 691 s wall with bf16 (load ~11) against 34 s with float32 (load ~1). So the paper-size steps
  run in float32, as the engine runs on CPU (``bf16`` applies to CUDA), and the bf16 autocast
  path (``fit(cpu_bf16=True)``) is stepped, with the same checks, at the tiny presets of every
  model below; the dtypes bf16 meets do not depend on the width.
- DiT-XL (675M parameters, 28 blocks) at 1,200 tokens: 183 CPU-s, 533 s wall, peak RSS 15.7 GiB
  and 16 GB written (an 11 GB checkpoint + two 2.6 GB release files) per DiT. That is beyond
  CI's time and a 16 GiB runner, so `make test` steps both DiTs at the paper's width, heads,
  token grid and conditions with 2 of the 28 blocks (``train.dit.depth``, a key users set);
  BRAING3N_PAPER_DIT=1 steps the full 28 blocks (needs ~17 GiB free memory; the figures above
  are of that step run by the same ``fit`` call outside pytest).
- AutoencoderKL trains on whole 160 x 192 x 160 volumes (train.aekl); one bf16 step there saves
  11.6 GiB of activations (docs/gpu.md), so its loader's batch is cropped to CROP_AEKL, which
  keeps every level of the paper channels (32-64-64-128-128, /16 per axis).
- Paper-size float32 steps (CPU-s of this process / wall on the shared machine / peak RSS):
  MAE paper 62 / 320 s / 5.0 GiB, MAE ViT-B 48 / 252 s / 2.8 GiB, decoder on the frozen paper
  encoder 61 / 175 s / 4.9 GiB, AutoencoderKL on the crop 44 / 164 s / 3.6 GiB, DiT and DiT-long
  with 2 blocks 15 / 72 s / 3.8 GiB each (plus each test's resume ``fit``).
- The tiny presets' bf16 steps: 3-17 CPU-s each, the decoder's (whole volumes through a paper-size
  CNN path at tiny widths) 52 CPU-s, peak RSS <= 3.8 GiB.
- torch.compile of the tiny presets, wall on the loaded machine (inductor's C++ compile runs in
  worker processes): MAE 390 s, DiT 109 s, decoder 290 s, AutoencoderKL 169 s (all passed,
  2026-12-08), so `make test` compiles the DiT (CI time: the whole `.ci/run` must stay under
  40 min); BRAING3N_COMPILE_ALL=1 compiles the MAE too.
A DiT's blocks get exact-zero gradients at the first step (adaLN-Zero: their gates start at 0);
they count as gradients here, as in training. Seconds, CPU seconds and peak RSS of every step are
logged (``pytest -o log_cli=true -o log_cli_level=INFO``).
"""

from __future__ import annotations

import gc
import hashlib
import logging
import math
import os
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from braing3n.bench.paper import base_config, make_task, write_store
from braing3n.train.engine import fit

pytestmark = pytest.mark.slow
log = logging.getLogger(__name__)

CROP_AEKL = (64, 64, 64)  # multiples of 16: every AutoencoderKL level runs
DIT_DEPTH = 2  # blocks of the DiTs in `make test` (paper: 28; BRAING3N_PAPER_DIT=1)
FULL_DIT = os.environ.get("BRAING3N_PAPER_DIT") == "1"
STEP = dict(steps=1, batch_size=1, ckpt_every=1, log_every=1, num_workers=0, device="cpu",
            warmup_steps=0)  # warmup 0: the one step moves the weights at the configured lr


class _Probe:
    """The task as the engine sees it, keeping the model it builds (attributes delegated)."""

    def __init__(self, task, crop: tuple[int, int, int] | None = None):
        self._task, self._crop, self.model = task, crop, None

    def __getattr__(self, name):
        return getattr(self._task, name)

    def build_model(self):
        self.model = self._task.build_model()
        return self.model

    def batches(self, rank, world, seed, start_step):
        for batch in self._task.batches(rank, world, seed, start_step):
            if self._crop is not None:  # centre crop of the loader's volumes
                d, h, w = batch.shape[-3:]
                cd, ch, cw = self._crop
                batch = batch[..., (d - cd) // 2:(d + cd) // 2, (h - ch) // 2:(h + ch) // 2,
                              (w - cw) // 2:(w + cw) // 2].contiguous()
            yield batch


class _PeakRSS:
    """Peak resident memory of this process while the block runs (sampled every 50 ms)."""

    def __enter__(self):
        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while True:
            with open("/proc/self/status") as fh:
                rss = next(int(line.split()[1]) for line in fh if line.startswith("VmRSS"))
            self.peak = max(self.peak, rss * 1024)
            if self._stop.wait(0.05):
                return

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().reshape(-1).view(torch.uint8)


def _equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit for bit (torch.equal alone takes -0.0 for 0.0)."""
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(_bits(a), _bits(b))


def _digest(path: Path) -> dict:
    """Metadata and a hash of each tensor's bits of a safetensors file (the file's bytes are no key: the
    library writes the metadata map in a per-process hash order)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as fh:
        out = {k: hashlib.sha256(_bits(fh.get_tensor(k)).numpy().tobytes()).hexdigest() for k in fh.keys()}
        out["__metadata__"] = fh.metadata()
    return out


def engine_step(pt, out: Path, cpu_bf16: bool, crop=None) -> dict:
    """One optimiser step of ``pt`` through ``fit`` in ``out``; asserts the checks of the module docstring."""
    probe = _Probe(pt.task, crop)
    seen: dict = {}

    def pre_step(opt, args, kwargs):
        params = [p for g in opt.param_groups for p in g["params"]]
        seen["opt"] = opt
        seen["ids"] = {id(p) for p in params}
        seen["no_grad"] = sum(p.grad is None for p in params)
        grads = [p.grad.float() for p in params if p.grad is not None]
        seen["finite"] = all(bool(torch.isfinite(g).all()) for g in grads)
        seen["norm"] = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))
        seen["zero"] = sum(not bool(g.any()) for g in grads)

    hook = register_optimizer_step_pre_hook(pre_step)
    t0, cpu0 = time.perf_counter(), time.process_time()
    try:
        with _PeakRSS() as rss:
            fit(probe, pt.train, out, cpu_bf16=cpu_bf16)
    finally:
        hook.remove()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    model, opt = probe.model, seen["opt"]

    metrics = pd.read_csv(out / "metrics.csv")
    assert len(metrics) == 1 and math.isfinite(metrics["loss"].iloc[0]), metrics
    frozen = [n for n, p in model.named_parameters() if id(p) not in seen["ids"]]
    assert all(model.get_parameter(n).grad is None for n in frozen), "a frozen parameter got a gradient"
    assert all(not model.get_parameter(n).requires_grad for n in frozen), "a trainable parameter is not optimised"
    assert seen["no_grad"] == 0 and seen["finite"], f"{seen['no_grad']} trainable parameters without a gradient"
    if pt.train.grad_clip:  # the optimiser saw the clipped gradient; metrics log the norm before clipping
        assert seen["norm"] <= pt.train.grad_clip * (1 + 1e-4) + 1e-6
        assert math.isfinite(metrics["grad_norm"].iloc[0]) and metrics["grad_norm"].iloc[0] > 0

    ckpt = out / "checkpoints" / "step_00000001.pt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)
    assert state["step"] == 1 and state["task"] == pt.task.name
    from safetensors.torch import load_file

    # the trained weights as released (the live model holds the EMA weights once a task's export ran)
    live = load_file(str(out / "final.safetensors"))
    assert state["model"].keys() == live.keys() == model.state_dict().keys()
    differ = [k for k, v in live.items() if not _equal(state["model"][k], v)]
    assert not differ, f"checkpoint differs from the trained weights in {differ}"
    live_opt = opt.state_dict()
    assert state["optimizer"]["param_groups"] == live_opt["param_groups"]
    for i, s in live_opt["state"].items():
        assert all(_equal(state["optimizer"]["state"][i][k], v) for k, v in s.items() if torch.is_tensor(v))
    if pt.train.ema_decay > 0:
        ema = load_file(str(out / "final_ema.safetensors"))
        shadow = state["ema"]["shadow"]
        assert shadow and all(_equal(ema[k], v.to(live[k].dtype)) for k, v in shadow.items())
        assert not any(k in shadow for k in (f"{n}" for n in frozen))  # frozen weights are not averaged
    params = sum(p.numel() for p in model.parameters())
    zero = seen.pop("zero")
    seen.clear()
    del state, live, live_opt, model, opt, probe
    gc.collect()

    # reload through the engine: the same run resumes at its last step and releases the same weights
    before = {p.name: _digest(p) for p in out.glob("final*.safetensors")}
    again = _Probe(pt.task, crop)
    fit(again, pt.train, out, cpu_bf16=cpu_bf16)
    assert len(before) == 1 + (pt.train.ema_decay > 0)
    assert {p.name: _digest(p) for p in out.glob("final*.safetensors")} == before
    del again
    gc.collect()
    row = {"model": pt.label, "bf16": cpu_bf16, "params_m": round(params / 1e6, 1), "wall_s": round(wall, 1),
           "cpu_s": round(cpu, 1), "peak_rss_gib": round(rss.peak / 2**30, 2), "zero_grads": zero}
    log.info("paper step %s", row)
    return row


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper_size")
    config = base_config(root / "results")
    write_store(root / "results", n=1)
    return root, config


@pytest.fixture(scope="module")
def paper_mae(setup):
    """The paper-preset MAE's step; its folder is the decoder's frozen encoder (train.decoder.mae_dir)."""
    root, config = setup
    pt = make_task("mae-paper", config, **STEP)
    row = engine_step(pt, root / "mae-paper", cpu_bf16=False)
    return row, root / "mae-paper"


@pytest.fixture(scope="module")
def tiny_mae(setup):
    root, config = setup
    pt = make_task("mae-paper", config, tiny=True, **STEP)
    row = engine_step(pt, root / "tiny-mae-bf16", cpu_bf16=True)
    return row, root / "tiny-mae-bf16"


def test_paper_mae_one_engine_step(paper_mae):
    row = paper_mae[0]
    assert row["params_m"] > 200  # 224M: width 1152, 16 heads


def test_vitb_mae_one_engine_step(setup):
    root, config = setup
    row = engine_step(make_task("mae-vitb", config, **STEP), root / "mae-vitb", cpu_bf16=False)
    assert 100 < row["params_m"] < 130  # 116M: ViT-B encoder + MAE decoder


def test_decoder_on_the_frozen_paper_encoder_one_engine_step(setup, paper_mae):
    root, config = setup
    pt = make_task("decoder", config, mae_dir=paper_mae[1], **STEP)
    row = engine_step(pt, root / "decoder", cpu_bf16=False)
    assert row["params_m"] > 190  # 197M, of which the 1.4M of projection + CNN decoder train


def test_aekl_one_engine_step_on_a_crop(setup):
    root, config = setup
    pt = make_task("aekl", config, **STEP)
    assert pt.task.cfg.channels == (32, 64, 64, 128, 128)
    row = engine_step(pt, root / "aekl", cpu_bf16=False, crop=CROP_AEKL)
    assert 10 < row["params_m"] < 12


@pytest.mark.parametrize("label", ["dit", "dit-long"])
def test_dit_one_engine_step_at_paper_width_and_tokens(setup, label):
    root, config = setup
    section = "dit" if label == "dit" else "dit_long"
    if not FULL_DIT:
        config = {**config, "train": {**config["train"], section: {**config["train"][section], "depth": DIT_DEPTH}}}
    pt = make_task(label, config, **STEP)
    cfg = pt.task.model_cfg
    assert (cfg.hidden, cfg.heads, cfg.depth) == (1152, 16, 28 if FULL_DIT else DIT_DEPTH)
    batch = next(iter(pt.task.batches(0, 1, 0, 0)))
    assert tuple(batch["x1"].shape) == (1, 1200, 32)  # the paper's token grid, 10 x 12 x 10 x 32
    engine_step(pt, root / label, cpu_bf16=False)


@pytest.mark.parametrize("label", ["mae-vitb", "dit", "dit-long", "aekl"])
def test_tiny_presets_one_bf16_autocast_engine_step(setup, label):
    root, config = setup
    crop = CROP_AEKL if label == "aekl" else None
    engine_step(make_task(label, config, tiny=True, **STEP), root / f"tiny-{label}-bf16", cpu_bf16=True, crop=crop)


def test_tiny_decoder_one_bf16_autocast_engine_step(setup, tiny_mae):
    root, config = setup
    pt = make_task("decoder", config, mae_dir=tiny_mae[1], tiny=True, **STEP)
    engine_step(pt, root / "tiny-decoder-bf16", cpu_bf16=True)


@pytest.mark.parametrize("label", ["mae-paper", "dit"] if os.environ.get("BRAING3N_COMPILE_ALL") else ["dit"])
def test_tiny_presets_one_compiled_engine_step(setup, label):
    """torch.compile (inductor, C++ on CPU) through the engine: a compile-only failure shows here. The two
    transformer families (MAE, DiT): each compile costs minutes of wall time on 2 cores (docstring above)."""
    root, config = setup
    pt = make_task(label, config, tiny=True, compile=True, **STEP)
    engine_step(pt, root / f"tiny-{label}-compiled", cpu_bf16=False)
