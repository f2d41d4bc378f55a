"""Sampling API used by `braing3n generate`, `braing3n forecast` and the evaluation stage.

    gen = load_generator("results/models/dit", device="auto")
    z = sample_latents(gen, {"disease": "AD", "sex": "F", "age": 72}, n=8, cfg_scale=2.0,
                       steps=50, solver="heun", seed=0)      # [8, 1200, 32], de-normalised

Conditions left out (or None) are "unknown". Noise is drawn on the CPU from ``seed`` so the same
seed gives the same latents on any device and for any ``batch_size``.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from braing3n import flow
from braing3n.generate.conditions import LatentNorm, Vocabulary
from braing3n.generate.tasks import GENERATOR_JSON
from braing3n.models.dit import CONTEXT_KEY, DiT, DiTConfig
from braing3n.train.distributed import pick_device
from braing3n.train.engine import load_weights, release_weights


@dataclass
class Generator:
    model: DiT
    vocab: Vocabulary
    norm: LatentNorm
    kind: str  # "dit" | "dit_long"
    device: torch.device
    meta: dict

    @property
    def conditions(self) -> list[str]:
        return [*self.vocab.categorical, *self.vocab.continuous]


def generator_from_parts(model: DiT, meta: dict, device: torch.device | str = "cpu") -> Generator:
    """A Generator from an in-memory model and its ``generator.json`` dict (tests, benchmarks)."""
    return Generator(model.to(device).eval(), Vocabulary.from_dict(meta["vocabulary"]),
                     LatentNorm.from_dict(meta["latent_norm"]), meta["kind"], torch.device(device), meta)


def load_generator(model_dir: str | Path, device: str | torch.device = "auto") -> Generator:
    """Model folder written by `braing3n train dit|dit-long` -> Generator (EMA weights when present)."""
    model_dir = Path(model_dir)
    meta_path = model_dir / GENERATOR_JSON
    if not meta_path.exists():
        raise FileNotFoundError(f"{meta_path}: not a trained generator folder (run `braing3n train dit` first)")
    meta = json.loads(meta_path.read_text())
    weights = release_weights(model_dir)
    if not weights.exists():
        raise FileNotFoundError(f"{weights}: generator weights missing")
    dev = device if isinstance(device, torch.device) else pick_device(device)
    model = DiT(DiTConfig.from_dict(meta["model"]))
    load_weights(model, weights)
    return generator_from_parts(model, meta, dev)


def _autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


def _velocity_fn(model: DiT, device: torch.device):
    def fn(x, t, cond):
        with _autocast(device):
            return model(x, t, cond).float()
    return fn


@torch.no_grad()
def sample_latents(gen: Generator, conditions: dict, n: int, cfg_scale: float = 2.0, steps: int = 50,
                   solver: str = "heun", seed: int = 0, context: torch.Tensor | None = None,
                   batch_size: int = 16, keep: dict | None = None) -> torch.Tensor:
    """n latents [n, 1200, 32] (CPU float32, de-normalised) for one condition request.

    ``cfg_scale`` w: v = v_u + w (v_c - v_u) with the unconditional branch = every condition unknown,
    except those in ``keep`` (a subset of the request held in both branches, so guidance acts on the
    other conditions only); w = 1 is plain conditional sampling. ``context`` [n or 1, 1200, 32] is
    the raw baseline latent for the longitudinal model (required there, refused otherwise).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if keep and any(str(conditions.get(k)).strip() != str(v).strip() for k, v in keep.items()):
        raise ValueError(f"keep={keep} must be part of the request {conditions}")
    if (gen.kind == "dit_long") != (context is not None):
        raise ValueError(f"model kind {gen.kind!r}: context (baseline latent) is "
                         f"{'required' if gen.kind == 'dit_long' else 'not accepted'}")
    cfg = gen.model.cfg
    g = torch.Generator().manual_seed(int(seed))
    noise = torch.randn(n, gen.model.num_tokens, cfg.in_channels, generator=g)
    if context is not None:
        context = gen.norm.normalise(context.float().cpu())
        context = context.expand(n, -1, -1) if context.shape[0] == 1 else context
        if context.shape[0] != n:
            raise ValueError(f"context has {context.shape[0]} latents for n={n}")
    fn = _velocity_fn(gen.model, gen.device)
    out = []
    for s in range(0, n, batch_size):
        e = min(n, s + batch_size)
        b = e - s
        cond = gen.vocab.encode_request(conditions, b, gen.device)
        ctx = None if context is None else context[s:e].to(gen.device)
        if ctx is not None:
            cond[CONTEXT_KEY] = ctx
        uncond = gen.vocab.encode_request(keep or {}, b, gen.device)  # {}: every condition unknown
        if ctx is not None:
            uncond[CONTEXT_KEY] = ctx
        z = flow.sample(fn, noise[s:e].to(gen.device), cond, uncond, cfg_scale, steps, solver)
        out.append(gen.norm.denormalise(z.float().cpu()))
    return torch.cat(out)
