"""`braing3n bench tokenizer`: MAE / decoder step throughput, the loader alone and both together.

    braing3n bench tokenizer --out bench                  # GPU: paper sizes; CPU: tiny
    braing3n bench tokenizer --out bench --anchor ../shared/tools/gpu_anchor.py

Rows (written to {out}/tokenizer.csv|md with provenance):
- ``mae`` train step (patchify, 70 % masking, encoder on visible tokens, decoder, masked MSE,
  backward, fused AdamW, bf16 autocast on CUDA), eager and torch.compile, vol/s, achieved
  TFLOP/s (3 x forward matmul FLOPs) and peak memory; ``mae-monai``: MONAI's
  MaskedAutoEncoderViT at the same width/depth (the alternative the model code was chosen over);
- ``decoder`` train step (frozen encoder forward + projection + CNN decoder + L1), channels-last;
- ``loader``: the real store loader (np.load of float16 .npy files, DataLoader workers, pinned
  copy to the device, z-score on the device) alone, vol/s and GB/s per worker count, on a
  synthetic store of ``--store-volumes`` files (page cache warm: the disk is not measured);
- ``mae+loader``: the MAE step fed by that loader, and its ratio to the step alone.
``--anchor`` loads the plain-PyTorch reference (gpu_anchor.py) and times its MAE and decoder
next to ours at its shapes (ViT-B, 70 % masking; paper CNN decoder), one step of each in turn:
{out}/tokenizer_anchor.csv, ratio = anchor step time / ours (GPU: batch 32 / 2, eager and
compiled; CPU: batch 1, float32). On GPU its own eager/compiled runs are rows here too.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from braing3n.bench import anchor as gpu_anchor
from braing3n.data.geometry import MODEL_SHAPE
from braing3n.data.loader import VolumeDataset, train_batches, zscore
from braing3n.models.decoder import TokenizerModel, decoder_config, decoder_flops, l1_loss
from braing3n.models.mae import MAE, MAEConfig, mae_config, mae_flops, patchify, transformer_flops

VOL_BYTES = int(np.prod(MODEL_SHAPE)) * 2  # float16


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


def _timed(step, steps: int, warm: int, device: torch.device) -> tuple[float, float]:
    for _ in range(warm):
        step()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    mem = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return (time.perf_counter() - t0) / steps, mem


def _train_step(model: torch.nn.Module, params, loss_fn, batch_fn, device: torch.device):
    opt = torch.optim.AdamW(params, lr=1e-4, fused=device.type == "cuda")

    def step():
        with _autocast(device):
            loss = loss_fn(model, batch_fn())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def bench_mae(cfg: MAEConfig, batch: int, device: torch.device, compiled: bool, steps: int, warm: int,
              batch_fn=None, name: str = "mae") -> dict:
    torch.manual_seed(0)
    model = MAE(cfg).to(device)
    run = torch.compile(model) if compiled else model
    fixed = torch.randn(batch, 1, *MODEL_SHAPE, device=device)
    step = _train_step(run, model.parameters(), lambda m, x: m(x)["loss"], batch_fn or (lambda: fixed), device)
    dt, mem = _timed(step, steps, warm, device)
    return {"name": name, "batch": batch, "compiled": compiled, "step_s": dt, "vol_per_s": batch / dt,
            "tflops": 3 * mae_flops(cfg) * batch / dt / 1e12, "peak_mem_gib": mem}


def bench_monai_mae(cfg: MAEConfig, batch: int, device: torch.device, steps: int, warm: int) -> dict:
    from monai.networks.nets import MaskedAutoEncoderViT

    torch.manual_seed(0)
    model = MaskedAutoEncoderViT(in_channels=1, img_size=MODEL_SHAPE, patch_size=16, hidden_size=cfg.width,
                                 mlp_dim=int(cfg.width * cfg.mlp_ratio), num_layers=cfg.depth, num_heads=cfg.heads,
                                 masking_ratio=cfg.mask_ratio, decoder_hidden_size=cfg.dec_width,
                                 decoder_mlp_dim=int(cfg.dec_width * cfg.mlp_ratio),
                                 decoder_num_layers=cfg.dec_depth, decoder_num_heads=cfg.dec_heads,
                                 # MONAI's 3D sin-cos needs a width divisible by 6 (512 is not)
                                 decoder_pos_embed_type="sincos" if cfg.dec_width % 6 == 0 else "learnable").to(device)
    x = torch.randn(batch, 1, *MODEL_SHAPE, device=device)

    def loss_fn(m, vols):
        pred, mask = m(vols)
        per = ((pred.float() - patchify(vols).float()) ** 2).mean(-1)
        return (per * mask).sum() / mask.sum()

    dt, mem = _timed(_train_step(model, model.parameters(), loss_fn, lambda: x, device), steps, warm, device)
    return {"name": "mae-monai", "batch": batch, "compiled": False, "step_s": dt, "vol_per_s": batch / dt,
            "tflops": 3 * mae_flops(cfg) * batch / dt / 1e12, "peak_mem_gib": mem}


def bench_decoder(mae_cfg: MAEConfig, preset: str, batch: int, device: torch.device, compiled: bool, steps: int,
                  warm: int) -> dict:
    torch.manual_seed(0)
    dec_cfg = decoder_config(preset)
    model = TokenizerModel(mae_cfg, dec_cfg).to(device).train()
    run = torch.compile(model) if compiled else model
    x = torch.randn(batch, 1, *MODEL_SHAPE, device=device)
    step = _train_step(run, model.trainable_parameters(), lambda m, v: l1_loss(m(v), v), lambda: x, device)
    dt, mem = _timed(step, steps, warm, device)
    # frozen encoder forward on all 1,200 tokens (no backward) + decoder forward and backward
    n = mae_cfg.n_tokens
    enc = 2 * n * mae_cfg.patch**3 * mae_cfg.width + transformer_flops(n + 1, mae_cfg.width, mae_cfg.depth)
    flops = enc + 3 * decoder_flops(mae_cfg, dec_cfg)
    return {"name": f"decoder-{preset}", "batch": batch, "compiled": compiled, "step_s": dt, "vol_per_s": batch / dt,
            "tflops": flops * batch / dt / 1e12, "peak_mem_gib": mem}


def make_store(folder: Path, n: int) -> VolumeDataset:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = folder / f"v{i:04d}.npy"
        np.save(p, (rng.random(MODEL_SHAPE, dtype=np.float32) * 1000).astype(np.float16))
        paths.append(str(p))
    return VolumeDataset(pd.DataFrame({"scan_id": [f"v{i}" for i in range(n)], "path": paths}))


def bench_loader(ds: VolumeDataset, batch: int, workers: int, device: torch.device, n_batches: int) -> dict:
    it = train_batches(ds, batch, 0, 1, 0, 0, workers, device)
    next(it)  # start workers
    t0 = time.perf_counter()
    for _ in range(n_batches):
        zscore(next(it).to(device, non_blocking=True))
    _sync(device)
    dt = (time.perf_counter() - t0) / n_batches
    return {"name": "loader", "batch": batch, "workers": workers, "step_s": dt, "vol_per_s": batch / dt,
            "gb_per_s": batch * VOL_BYTES / dt / 1e9}


def run_anchor(path: str) -> list[dict]:
    """gpu_anchor.py mae and dec, eager and compiled, as rows of this benchmark's table."""
    return [{"name": f"anchor {rec['model']}", "batch": rec["batch"], "compiled": rec["compiled"],
             "step_s": rec["step_s"], "vol_per_s": rec["samples_per_s"], "tflops": rec.get("achieved_tflops"),
             "peak_mem_gib": rec.get("peak_mem_gib")}
            for rec in gpu_anchor.run_anchor(path, ["mae", "dec"], "bench tokenizer")]


def anchor_pairs(mod, device: torch.device, mae_cfg: MAEConfig, dec_cfg, batch: int = 1, dec_batch: int = 1,
                 compiled: bool = False) -> list[gpu_anchor.Pair]:
    """The MAE and CNN-decoder train steps next to gpu_anchor.py's at the same shapes (``mod``: the
    anchor loaded by ``anchor.load_module``). The project's steps are its real ones: the MAE from
    the volume (patchify, 70 % masking, masked MSE); the decoder from frozen-encoder tokens
    (projection, token grid -> CNN decoder, L1 to the volume); the anchor's square its output."""
    gpu = device.type == "cuda"
    wrap = torch.compile if compiled else (lambda m: m)
    n, p = mae_cfg.n_tokens, mae_cfg.patch
    tag = " compiled" if compiled else ""

    def project_mae():
        torch.manual_seed(0)
        model = MAE(mae_cfg).to(device)
        x = torch.randn(batch, 1, *mae_cfg.img_size, device=device)
        return _train_step(wrap(model), model.parameters(), lambda m, v: m(v)["loss"], lambda: x, device)

    def anchor_mae():
        torch.manual_seed(0)
        model = mod.MAE(d=mae_cfg.width, L=mae_cfg.depth, h=mae_cfg.heads, dd=mae_cfg.dec_width,
                        dL=mae_cfg.dec_depth, dh=mae_cfg.dec_heads, n=n, keep=mae_cfg.n_keep, p=p).to(device)
        return gpu_anchor.anchor_step(wrap(model), (torch.randn(batch, n, p**3, device=device),), bf16=gpu)

    def project_dec():
        torch.manual_seed(0)
        model = TokenizerModel(mae_cfg, dec_cfg).to(device).train()
        tokens = torch.randn(dec_batch, n, mae_cfg.width, device=device)
        vols = torch.randn(dec_batch, 1, *mae_cfg.img_size, device=device)
        fn = wrap(lambda t: model.decode(model.latent_from_tokens(t)))
        return _train_step(fn, model.trainable_parameters(), lambda f, t: l1_loss(f(t), vols), lambda: tokens, device)

    def anchor_dec():
        torch.manual_seed(0)
        model = mod.Dec(ch=dec_cfg.channels).to(device)
        z = torch.randn(dec_batch, dec_cfg.latent_dim, *mae_cfg.grid, device=device)
        return gpu_anchor.anchor_step(wrap(model), (z,), bf16=gpu)

    shape, grid = "x".join(map(str, mae_cfg.img_size)), "x".join(map(str, mae_cfg.grid))
    return [
        gpu_anchor.Pair(f"mae{tag}", f"batch {batch}, {n} tokens, {mae_cfg.n_keep} kept, "
                        f"{mae_cfg.width}x{mae_cfg.depth}", project_mae, anchor_mae,
                        "project adds: patchify of the volume, CLS token, 2 final LayerNorms, masked-MSE loss"),
        gpu_anchor.Pair(f"decoder{tag}", f"batch {dec_batch}, {dec_cfg.latent_dim}x{grid}"
                        f" -> {shape}, channels {'-'.join(map(str, dec_cfg.channels))}", project_dec, anchor_dec,
                        f"project adds: {mae_cfg.width}->{dec_cfg.latent_dim} token projection, L1 to a volume"),
    ]


def compare_to_anchor(path: str, device: torch.device, out: Path, rounds: int, compile_: bool) -> pd.DataFrame:
    """The anchor's paper shapes (ViT-B MAE, 70 % masking; the paper CNN decoder) in this process,
    interleaved with the project's steps: {out}/tokenizer_anchor.csv. GPU: the anchor's first batch
    sizes (MAE 32, decoder 2), eager and compiled; CPU: batch 1, eager, float32."""
    from braing3n.provenance import provenance, write_table

    gpu = device.type == "cuda"
    mod = gpu_anchor.load_module(path)
    pairs = anchor_pairs(mod, device, mae_config("vitb"), decoder_config("paper"), *((32, 2) if gpu else (1, 1)))
    if gpu and compile_:
        pairs += anchor_pairs(mod, device, mae_config("vitb"), decoder_config("paper"), 32, 2, compiled=True)
    df = gpu_anchor.table(gpu_anchor.time_pairs(pairs, rounds, warm=3 if gpu else 1, sync=lambda: _sync(device)),
                          device, path)
    write_table(df, out / "tokenizer_anchor.csv", gpu_anchor.stamp(provenance(None, seed=0)))
    logging.getLogger(__name__).info("bench tokenizer: -> %s", out / "tokenizer_anchor.csv")
    print(df.drop(columns=["differences"]).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return df


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="braing3n bench tokenizer", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench")
    p.add_argument("--preset", default=None, help="MAE preset (default: vitb and paper on GPU, tiny on CPU)")
    p.add_argument("--batches", default=None, help="MAE batch sizes (GPU 32,128; CPU 2)")
    p.add_argument("--decoder-batch", type=int, default=None, help="decoder batch (GPU 8, CPU 1)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (GPU 20, CPU 3)")
    p.add_argument("--workers", default=None, help="loader worker counts (GPU 0,4,8,16; CPU 0,2)")
    p.add_argument("--store-volumes", type=int, default=None, help="synthetic store size (GPU 128, CPU 8)")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--no-monai", action="store_true")
    p.add_argument("--anchor", default=None, help="path of gpu_anchor.py, run as the reference")
    p.add_argument("--anchor-rounds", type=int, default=3,
                   help="interleaved steps per side in the anchor comparison (tokenizer_anchor.csv)")
    p.add_argument("--anchor-only", action="store_true", help="only the anchor comparison")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    from braing3n.provenance import provenance, write_table
    from braing3n.train.distributed import pick_device

    device = pick_device(args.device)
    gpu = device.type == "cuda"
    if gpu:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    if args.anchor:
        compare_to_anchor(args.anchor, device, Path(args.out), args.anchor_rounds, not args.no_compile)
        if args.anchor_only:
            return 0
    presets = [args.preset] if args.preset else (["vitb", "paper"] if gpu else ["tiny"])
    batches = [int(b) for b in (args.batches or ("32,128" if gpu else "2")).split(",")]
    steps, warm = args.steps or (20 if gpu else 3), 5 if gpu else 1
    compile_ = gpu and not args.no_compile
    rows = []
    for preset in presets:
        cfg = mae_config(preset)
        for b in batches:
            rows.append({**bench_mae(cfg, b, device, False, steps, warm), "preset": preset})
            if compile_:
                rows.append({**bench_mae(cfg, b, device, True, steps, warm + 3), "preset": preset})
        if not args.no_monai:
            rows.append({**bench_monai_mae(cfg, batches[0], device, steps, warm), "preset": preset})
    dec_preset = "paper" if gpu else "tiny"
    db = args.decoder_batch or (8 if gpu else 1)
    mae_cfg = mae_config(presets[0])
    rows.append({**bench_decoder(mae_cfg, dec_preset, db, device, False, steps, warm), "preset": presets[0]})
    if compile_:
        rows.append({**bench_decoder(mae_cfg, dec_preset, db, device, True, steps, warm + 3), "preset": presets[0]})
    with tempfile.TemporaryDirectory(prefix="braing3n-bench-") as tmp:
        ds = make_store(Path(tmp), args.store_volumes or (128 if gpu else 8))
        workers = [int(w) for w in (args.workers or ("0,4,8,16" if gpu else "0,2")).split(",")]
        b = batches[0]
        for w in workers:
            rows.append(bench_loader(ds, b, w, device, steps * 2))
        best_w = max((r for r in rows if r["name"] == "loader"), key=lambda r: r["vol_per_s"])["workers"]
        cfg = mae_config(presets[0])
        alone = next(r for r in rows if r["name"] == "mae" and r["batch"] == b and r["preset"] == presets[0]
                     and r["compiled"] == compile_)
        it = train_batches(ds, b, 0, 1, 0, 0, best_w, device)
        fed = bench_mae(cfg, b, device, compile_, steps, warm + (3 if compile_ else 0),
                        batch_fn=lambda: zscore(next(it).to(device, non_blocking=True)), name="mae+loader")
        fed.update(preset=presets[0], workers=best_w, ratio_to_step_alone=fed["vol_per_s"] / alone["vol_per_s"])
        rows.append(fed)
    if args.anchor and gpu:  # on CPU the anchor script runs toy models: compare_to_anchor has the paper shapes
        rows += run_anchor(args.anchor)
    df = pd.DataFrame(rows)
    df.insert(1, "device", torch.cuda.get_device_name(device) if gpu else f"cpu x{torch.get_num_threads()}")
    out = Path(args.out) / "tokenizer.csv"
    write_table(df, out, provenance(None, seed=0))
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(df.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"wrote {out}")
    return 0
