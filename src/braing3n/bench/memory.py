"""`braing3n bench memory`: training memory per model preset and batch size, an estimate for GPU planning.

    braing3n bench memory --out bench          # -> bench/memory.csv|md (docs/gpu.md cites it)

Per model (the paper-size tasks of braing3n.bench.paper, built from config/config.yaml as
`braing3n train` builds them) and batch size:
- persistent state, counted from the model: float32 weights (frozen ones too), float32 gradients
  and AdamW's two moments of the trainable parameters, the EMA's float32 shadow;
- the activations autograd saves for backward in one forward of the real task loss under bf16
  autocast, counted with ``torch.autograd.graph.saved_tensors_hooks`` (each storage once; the
  parameters themselves excluded, autocast's bf16 weight copies included). The forward runs on
  fake tensors (``FakeTensorMode``: the same dispatch, autocast included, with no data), so a
  DiT-XL at batch 128 costs nothing; tests/test_paper_size.py checks the fake count against the
  count of a real step (equal but for LayerNorm's per-token mean/rstd, which the fake kernel types
  bf16 instead of float32: < 0.1 %). Counted at batch 1 and 2, which fixes the exact line
  ``a0 + a1 * batch`` (a0: the batch-independent bf16 weight copies);
- estimated peak = state + saved activations, and the largest batch whose peak fits 90 % of a 24,
  40, 80 or 141 GiB card (10 % left for the CUDA context, cuDNN workspaces, the backward's
  transient gradients and allocator fragmentation).
An ESTIMATE until a GPU measures it: `make gpu-check` writes the measured peaks (bench/gpu/).
DDP adds gradient buckets (about one more copy of the gradients) per GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import tempfile
from pathlib import Path

import pandas as pd
import torch

from braing3n.bench.paper import MODELS, PaperTask, base_config, make_task, write_store

GIB = 2**30
CARDS_GIB = (24, 40, 80, 141)
RESERVE = 0.10
BATCHES = (1, 8, 32, 128)


def count_saved(fn, params: list[torch.Tensor]) -> dict:
    """Bytes and number of distinct storages autograd saves while ``fn()`` runs (parameters excluded)."""
    skip = {p.untyped_storage()._cdata for p in params}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        if st._cdata not in skip:
            seen[st._cdata] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return {"bytes": sum(seen.values()), "tensors": len(seen), "out": out}


def build_model(pt: PaperTask) -> torch.nn.Module:
    """The task's model; the decoder's frozen encoder is left untrained (its weights do not change sizes)."""
    if pt.section == "decoder":
        from braing3n.models.decoder import TokenizerModel

        return TokenizerModel(pt.task.mae_cfg, pt.task.dec_cfg)
    return pt.task.build_model()


def trainable(pt: PaperTask, model: torch.nn.Module) -> list[torch.nn.Parameter]:
    fn = getattr(pt.task, "trainable_parameters", None)
    return list(fn(model)) if fn else [p for p in model.parameters() if p.requires_grad]


def real_batch(pt: PaperTask, batch: int, shape: tuple[int, int, int] | None = None):
    """One batch of ``batch`` items as the task's loader yields it (volumes: float16 zeros-and-ones)."""
    if pt.section.startswith("dit"):
        pt.task.batch_size = batch
        return next(iter(pt.task.batches(0, 1, 0, 0)))
    from braing3n.data.geometry import MODEL_SHAPE

    return torch.ones(batch, 1, *(shape or MODEL_SHAPE), dtype=torch.float16)


def state_bytes(pt: PaperTask, model: torch.nn.Module) -> dict:
    params = list(model.parameters())
    train = trainable(pt, model)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    ema = sum(v.numel() for k, v in model.state_dict().items() if v.dtype.is_floating_point and k not in frozen)
    n_all, n_train = sum(p.numel() for p in params), sum(p.numel() for p in train)
    return {"params_m": n_all / 1e6, "trainable_m": n_train / 1e6, "weights_gib": 4 * n_all / GIB,
            "grads_gib": 4 * n_train / GIB, "adamw_gib": 8 * n_train / GIB,
            "ema_gib": 4 * ema / GIB if pt.train.ema_decay > 0 else 0.0}


def saved_activation_bytes(pt: PaperTask, batch: int, bf16: bool = True, fake: bool = True,
                           model: torch.nn.Module | None = None) -> dict:
    """Saved-for-backward bytes of one training forward of ``pt``'s loss at ``batch`` (CPU dispatch)."""
    from torch._subclasses.fake_tensor import DataDependentOutputException, FakeTensorMode

    data = real_batch(pt, batch)
    mode = FakeTensorMode(allow_non_fake_inputs=True) if fake else contextlib.nullcontext()
    torch.manual_seed(0)
    with mode:
        model = build_model(pt) if model is None or fake else model
        model.train()
        amp = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

        def forward():
            with amp:
                try:
                    return pt.task.loss(model, data, torch.device("cpu"))[0]
                except DataDependentOutputException:  # a logged float() (AutoencoderKL's l1/kl) on fake data:
                    return None  # the graph is built by then; only scalar adds follow, which save nothing

        res = count_saved(forward, list(model.parameters()))
        res["state"] = state_bytes(pt, model)
    del res["out"]
    return res


def memory_rows(tasks: list[PaperTask], batches=BATCHES) -> list[dict]:
    rows = []
    for pt in tasks:
        one = saved_activation_bytes(pt, 1)
        two = saved_activation_bytes(pt, 2)
        a1 = (two["bytes"] - one["bytes"]) / GIB
        a0 = one["bytes"] / GIB - a1
        st = one["state"]
        fixed = st["weights_gib"] + st["grads_gib"] + st["adamw_gib"] + st["ema_gib"]
        fits = {f"max_batch_{c}gib": max(0, math.floor(((1 - RESERVE) * c - fixed - a0) / a1)) for c in CARDS_GIB}
        for b in (pt.train.batch_size, *batches):
            act = a0 + a1 * b
            rows.append({"model": pt.label, "batch": b, "configured": b == pt.train.batch_size, **st,
                         "activations_gib": act, "peak_est_gib": fixed + act, **fits})
    df = pd.DataFrame(rows).drop_duplicates(["model", "batch"]).sort_values(["model", "batch"], kind="stable")
    return df.to_dict("records")


def paper_tasks(results: Path, labels=None, config_files=None) -> list[PaperTask]:
    config = base_config(results, config_files)
    write_store(results, n=1)
    return [make_task(label, config, mae_dir=None) for label in (labels or MODELS)]


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="braing3n bench memory", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench")
    p.add_argument("--configfile", action="append", default=None, help="config (default config/config.yaml)")
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated rows of " + ",".join(MODELS))
    p.add_argument("--batches", default=",".join(map(str, BATCHES)))
    args = p.parse_args(argv)
    from braing3n.provenance import provenance, write_table

    labels = [m for m in args.models.split(",") if m]
    bad = [m for m in labels if m not in MODELS]
    if bad:
        raise ValueError(f"unknown model(s) {bad}; choose from {list(MODELS)}")
    with tempfile.TemporaryDirectory(prefix="braing3n-memory-") as tmp:
        tasks = paper_tasks(Path(tmp), labels, args.configfile)
        rows = memory_rows(tasks, [int(b) for b in args.batches.split(",")])
    df = pd.DataFrame(rows)
    df.insert(2, "precision", "bf16 autocast, fp32 master weights")
    out = Path(args.out) / "memory.csv"
    prov = provenance(None, seed=0)
    prov["note"] = "estimate: saved-tensor count on fake tensors (CPU dispatch, bf16 autocast), not a GPU measurement"
    write_table(df, out, prov)
    with pd.option_context("display.width", 250, "display.max_columns", 30):
        print(df.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print(f"wrote {out}")
    return 0
