"""`braing3n bench dit`: DiT training and sampling throughput, written to {out}/dit.csv|md.

    braing3n bench dit --out bench                        # GPU: paper size (DiT-XL); CPU: tiny
    braing3n bench dit --out bench --anchor ../shared/tools/gpu_anchor.py --tokenizer-dir results/models/decoder

Training: one optimiser step = conditional flow-matching loss (6 conditions, CFG dropout) +
backward + fused AdamW, bf16 autocast on CUDA, eager and torch.compile, in samples/s.
Sampling: ``--n-samples`` latents with ``--sample-steps`` Heun steps and classifier-free guidance
(conditional + unconditional halves in one batched forward), then the tokenizer decoder
(``--tokenizer-dir``; without it the same CNN architecture with random weights, paper channels on
GPU) to 160x192x160 volumes, in volumes/s. ``--anchor`` times gpu_anchor.py's
DiT next to ours in this process at DiT-XL shapes, one step of each in turn: {out}/dit_anchor.csv
(ratio = anchor step time / ours; GPU batch 16, eager and compiled; CPU batch 1, float32,
``--anchor-depth`` blocks); on GPU the anchor's own runs are rows of dit.csv too.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from braing3n import flow
from braing3n.bench import anchor as gpu_anchor
from braing3n.models.dit import DiT, DiTConfig, drop_conditions, null_condition

CATS = {"disease": 10, "sex": 2, "modality": 4, "site": 50, "idh": 2}
CONT = {"age": 1000.0}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


def _cond(b: int, device: torch.device) -> dict:
    g = torch.Generator().manual_seed(0)
    cond = {k: torch.randint(0, n + 1, (b,), generator=g).to(device) for k, n in CATS.items()}
    cond["age"] = (torch.rand(b, generator=g) * 80 + 10).to(device)
    return cond


def _train_step(model: DiT, run, batch: int, device: torch.device, weight_decay: float):
    """One flow-matching train step (six conditions, CFG dropout 0.1) of ``run`` (``model`` or its
    compiled form) on fixed random latents, as a closure."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=weight_decay, fused=device.type == "cuda")
    x1 = torch.randn(batch, model.num_tokens, model.cfg.in_channels, device=device)
    cond, probs = _cond(batch, device), dict.fromkeys([*CATS, *CONT], 0.1)

    def step():
        with _autocast(device):
            t = flow.sample_time(batch, device=device)
            loss = flow.flow_loss(run, x1, drop_conditions(cond, probs), t, torch.randn_like(x1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def train_throughput(cfg: DiTConfig, batch: int, device: torch.device, compiled: bool, steps: int, warm: int) -> dict:
    torch.manual_seed(0)
    model = DiT(cfg).to(device)
    step = _train_step(model, torch.compile(model) if compiled else model, batch, device, weight_decay=0.0)
    for _ in range(warm):
        step()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    dt = (time.perf_counter() - t0) / steps
    mem = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return {"stage": "train", "batch": batch, "compiled": compiled, "step_s": dt, "samples_per_s": batch / dt,
            "peak_mem_gib": mem}


@torch.no_grad()
def sample_throughput(cfg: DiTConfig, n: int, steps: int, device: torch.device, tokenizer) -> dict:
    torch.manual_seed(0)
    model = DiT(cfg).to(device).eval()
    cond, uncond = _cond(n, device), null_condition(cfg, n, device)

    def fn(x, t, c):
        with _autocast(device):
            return model(x, t, c).float()

    noise = torch.randn(n, model.num_tokens, cfg.in_channels, device=device)
    flow.sample(fn, noise[:1], {k: v[:1] for k, v in cond.items()}, {k: v[:1] for k, v in uncond.items()},
                2.0, 1, "heun")  # warm-up (kernels, allocator)
    _sync(device)
    t0 = time.perf_counter()
    z = flow.sample(fn, noise, cond, uncond, 2.0, steps, "heun")
    _sync(device)
    t_sample = time.perf_counter() - t0
    t_decode = float("nan")
    if tokenizer is not None:
        with _autocast(device):  # warm-up: the first call's kernel selection and allocations are not decode time
            tokenizer.decode(z[:min(n, 4)].to(getattr(tokenizer, "device", device)))
        _sync(device)
        t0 = time.perf_counter()
        for s in range(0, n, 4):
            with _autocast(device):
                tokenizer.decode(z[s:s + 4].to(getattr(tokenizer, "device", device)))
        _sync(device)
        t_decode = time.perf_counter() - t0
    total = t_sample + (0.0 if tokenizer is None else t_decode)
    return {"stage": "sample+decode", "batch": n,
            "compiled": False, "step_s": t_sample / steps, "samples_per_s": n / total, "sample_s": t_sample,
            "decode_s": t_decode, "nfe": 2 * steps, "cfg": True}


class RandomDecoder:
    """The tokenizer's CNN decoder architecture with random weights: decode timing without a trained model."""

    def __init__(self, preset: str, device: torch.device):
        from braing3n.models.decoder import CNNDecoder, decoder_config

        self.device = device
        self.net = CNNDecoder(decoder_config(preset)).to(device).eval()

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        b, n, c = latent.shape
        with _autocast(self.device):
            return self.net(latent.transpose(1, 2).reshape(b, c, 10, 12, 10)).float()


def run_anchor(path: str) -> list[dict]:
    """gpu_anchor.py dit, eager and compiled, as rows of this benchmark's table."""
    return [{"stage": "anchor train", "anchor_model": rec["model"], "batch": rec["batch"], "compiled": rec["compiled"],
             "step_s": rec["step_s"], "samples_per_s": rec["samples_per_s"], "peak_mem_gib": rec.get("peak_mem_gib")}
            for rec in gpu_anchor.run_anchor(path, ["dit"], "bench dit")]


def anchor_ratios(rows: list[dict]) -> tuple[list[float], list[float]]:
    """Per row: training throughput / the anchor's at the same batch and compile setting, and / the
    anchor's best (NaN for non-training rows). Only the anchor's DiT at the paper's size is a
    reference; on a machine without CUDA the anchor runs its own toy models (mae-tiny, dit-tiny,
    dec-tiny at 64 tokens), which no ratio may use."""
    anchor = {(r["batch"], r["compiled"]): r["samples_per_s"] for r in rows
              if r["stage"] == "anchor train" and str(r.get("anchor_model", "")).startswith("dit")
              and not str(r.get("anchor_model", "")).endswith("-tiny")}
    best = max(anchor.values()) if anchor else float("nan")
    same = [r["samples_per_s"] / anchor[(r["batch"], r["compiled"])]
            if r["stage"] == "train" and (r["batch"], r["compiled"]) in anchor else float("nan") for r in rows]
    return same, [r["samples_per_s"] / best if r["stage"] == "train" else float("nan") for r in rows]


def anchor_pair(mod, cfg: DiTConfig, batch: int, device: torch.device, compiled: bool = False,
                hold_both: bool = True):
    """The DiT train step (flow-matching loss with six conditions and CFG dropout, as
    ``train_throughput``) next to gpu_anchor.py's DiT at the same width, depth and tokens.
    ``hold_both=False`` where the two do not fit in memory together (28-block DiT-XL + AdamW in
    float32 ~17 GB each at batch 1): each is then rebuilt per round."""
    gpu = device.type == "cuda"
    wrap = torch.compile if compiled else (lambda m: m)
    n = int(np.prod(cfg.grid)) // cfg.patch**3

    def project():
        torch.manual_seed(0)
        model = DiT(cfg).to(device)
        return _train_step(model, wrap(model), batch, device, weight_decay=0.01)  # AdamW's default

    def anchor():
        torch.manual_seed(0)
        model = mod.DiT(d=cfg.hidden, L=cfg.depth, h=cfg.heads, n=n, c=cfg.in_channels).to(device)
        inputs = (torch.randn(batch, n, cfg.in_channels, device=device), torch.randn(batch, 256, device=device))
        return gpu_anchor.anchor_step(wrap(model), inputs, bf16=gpu)

    return gpu_anchor.Pair(f"dit{' compiled' if compiled else ''}",
                           f"batch {batch}, {n} tokens x {cfg.in_channels}, {cfg.hidden}x{cfg.depth}", project, anchor,
                           "project adds: 6 condition embedders (5 tables + age sinusoid MLP), CFG dropout, "
                           "path interpolation, adaLN final layer, velocity MSE", hold_both=hold_both)


def compare_to_anchor(path: str, device: torch.device, out: Path, rounds: int, compile_: bool,
                      depth: int | None = None) -> pd.DataFrame:
    """DiT-XL (1,200 latent tokens, width 1152, 16 heads) next to the anchor's in this process:
    {out}/dit_anchor.csv. GPU: batch 16, eager and compiled; CPU: batch 1, eager, float32.
    ``depth`` < 28 keeps the per-token shapes and cuts blocks (a small machine's memory): the
    fixed parts (embedders, final layer) then weigh more, so the ratio is a lower bound."""
    from braing3n.provenance import provenance, write_table

    gpu = device.type == "cuda"
    mod = gpu_anchor.load_module(path)
    cfg = DiTConfig.from_preset("paper", categorical=CATS, continuous=CONT)
    if depth:
        cfg = DiTConfig.from_preset("paper", categorical=CATS, continuous=CONT, depth=depth)
    b = 16 if gpu else 1
    hold = gpu or cfg.depth <= 14
    pairs = [anchor_pair(mod, cfg, b, device, hold_both=hold)]
    if gpu and compile_:
        pairs.append(anchor_pair(mod, cfg, b, device, True))
    df = gpu_anchor.table(gpu_anchor.time_pairs(pairs, rounds, warm=3 if gpu else 1, sync=lambda: _sync(device)),
                          device, path)
    write_table(df, out / "dit_anchor.csv", gpu_anchor.stamp(provenance(None, seed=0)))
    print(df.drop(columns=["differences"]).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return df


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="braing3n bench dit", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench")
    p.add_argument("--preset", default=None, help="DiT preset (default: paper on GPU, tiny on CPU)")
    p.add_argument("--batches", default=None, help="training batch sizes, comma-separated (GPU 16,64; CPU 2)")
    p.add_argument("--steps", type=int, default=None, help="timed training steps (GPU 20, CPU 2)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    p.add_argument("--n-samples", type=int, default=None, help="volumes sampled (GPU 16, CPU 2)")
    p.add_argument("--sample-steps", type=int, default=None, help="Heun steps (GPU 50, CPU 3)")
    p.add_argument("--tokenizer-dir", default=None, help="tokenizer folder: decode the samples with its decoder")
    p.add_argument("--anchor", default=None, help="path of gpu_anchor.py to run as the reference")
    p.add_argument("--anchor-rounds", type=int, default=2,
                   help="interleaved steps per side in the anchor comparison (dit_anchor.csv)")
    p.add_argument("--anchor-only", action="store_true", help="only the anchor comparison")
    p.add_argument("--anchor-depth", type=int, default=None,
                   help="DiT blocks in the anchor comparison (default 28; fewer on a small machine's memory)")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    from braing3n.train.distributed import pick_device

    device = pick_device(args.device)
    gpu = device.type == "cuda"
    if gpu:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.anchor:
        compare_to_anchor(args.anchor, device, Path(args.out), args.anchor_rounds, not args.no_compile,
                          args.anchor_depth)
        if args.anchor_only:
            return 0
    preset = args.preset or ("paper" if gpu else "tiny")
    cfg = DiTConfig.from_preset(preset, categorical=CATS, continuous=CONT)
    batches = [int(b) for b in (args.batches or ("16,64" if gpu else "2")).split(",")]
    steps, warm = args.steps or (20 if gpu else 2), 5 if gpu else 1
    rows = []
    for b in batches:
        rows.append(train_throughput(cfg, b, device, False, steps, warm))
    if not args.no_compile:
        rows.append(train_throughput(cfg, batches[0], device, True, steps, warm + 3))
    if args.tokenizer_dir:
        from braing3n.tokenizer import load_tokenizer

        tok = load_tokenizer(args.tokenizer_dir, str(device))
    else:
        tok = RandomDecoder("paper" if gpu else "tiny", device)
    rows.append(sample_throughput(cfg, args.n_samples or (16 if gpu else 2), args.sample_steps or (50 if gpu else 3),
                                  device, tok))
    if args.anchor and gpu:  # on CPU the anchor script runs toy models: compare_to_anchor has the paper shapes
        rows += run_anchor(args.anchor)
    df = pd.DataFrame(rows)
    df.insert(0, "model", f"dit-{preset}")
    df.insert(1, "device", torch.cuda.get_device_name(device) if gpu else "cpu")
    same, best = anchor_ratios(rows)
    if args.anchor and all(r != r for r in same + best):  # all NaN
        print("bench dit: the anchor ran no paper-size DiT here (CPU toy models only): no ratio", file=sys.stderr)
    df["ratio_to_anchor_same_batch"], df["ratio_to_best_anchor"] = same, best
    from braing3n.provenance import provenance, write_table

    out = Path(args.out) / "dit.csv"
    write_table(df, out, provenance(None, seed=0))
    print(df.to_string(index=False))
    print(f"bench dit: -> {out}")
    return 0
