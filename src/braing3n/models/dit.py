"""Conditional DiT on the tokenizer latent (1,200 tokens x 32 channels), predicting velocity.

Follows facebookresearch/DiT: linear token embedding + fixed 3D sin-cos positions, adaLN-Zero
blocks whose modulation (and the final projection) start at zero so every block is the identity
at init, SDPA attention. The conditioning vector is the SUM of the timestep embedding and one
embedding per condition:
  categorical (disease, sex, modality, site, idh, ...): nn.Embedding with index 0 = "unknown";
  continuous (age, years to follow-up): sinusoid + MLP, NaN = "unknown" -> a learned null vector.
The unknown value serves both missing metadata and classifier-free dropout, so any subset of
conditions can be set at sampling. The longitudinal variant concatenates a context latent (the
baseline scan) channel-wise to x_t (``context_channels``), passed as ``cond["context"]``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from braing3n.models.mae import sincos_pos_embed_3d

GRID = (10, 12, 10)
LATENT_CHANNELS = 32
PRESETS: dict[str, dict] = {
    "paper": {"hidden": 1152, "depth": 28, "heads": 16},  # DiT-XL
    "base": {"hidden": 768, "depth": 12, "heads": 12},
    "small": {"hidden": 384, "depth": 12, "heads": 6},
    "tiny": {"hidden": 96, "depth": 3, "heads": 4},
}
CONTEXT_KEY = "context"


@dataclass
class DiTConfig:
    hidden: int = 1152
    depth: int = 28
    heads: int = 16
    mlp_ratio: float = 4.0
    in_channels: int = LATENT_CHANNELS
    context_channels: int = 0
    grid: tuple[int, int, int] = GRID
    categorical: dict[str, int] = field(default_factory=dict)  # name -> number of KNOWN values
    continuous: dict[str, float] = field(default_factory=dict)  # name -> sinusoid max period
    # latent patch size, as DiT's p: p^3 latent tokens form one transformer token (10x12x10 -> 5x6x5
    # at p=2: 8x fewer tokens, the cheap setting for CPU runs); the output is unpatchified back
    patch: int = 1

    def __post_init__(self):
        if self.patch < 1 or any(g % self.patch for g in self.grid):
            raise ValueError(f"DiT patch {self.patch} does not divide the latent grid {tuple(self.grid)}")

    @classmethod
    def from_preset(cls, preset: str, **kw) -> DiTConfig:
        if preset not in PRESETS:
            raise ValueError(f"unknown DiT preset {preset!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[preset], **kw})

    @classmethod
    def from_dict(cls, d: dict) -> DiTConfig:
        return cls(**{**d, "grid": tuple(d.get("grid", GRID))})

    def to_dict(self) -> dict:
        return asdict(self)


def patchify_latent(x: torch.Tensor, grid: tuple[int, int, int], patch: int) -> torch.Tensor:
    """[B, prod(grid), C] tokens (C order over d, h, w) -> [B, prod(grid // patch), patch^3 * C]."""
    if patch == 1:
        return x
    b, _, c = x.shape
    d, h, w = (g // patch for g in grid)
    x = x.reshape(b, d, patch, h, patch, w, patch, c).permute(0, 1, 3, 5, 2, 4, 6, 7)
    return x.reshape(b, d * h * w, patch ** 3 * c)


def unpatchify_latent(x: torch.Tensor, grid: tuple[int, int, int], patch: int) -> torch.Tensor:
    """Inverse of ``patchify_latent``."""
    if patch == 1:
        return x
    b = x.shape[0]
    d, h, w = (g // patch for g in grid)
    c = x.shape[-1] // patch ** 3
    x = x.reshape(b, d, h, w, patch, patch, patch, c).permute(0, 1, 4, 2, 5, 3, 6, 7)
    return x.reshape(b, d * h * w * patch ** 3, c)


def sinusoid(x: torch.Tensor, dim: int, max_period: float) -> torch.Tensor:
    """[B] -> [B, dim] sinusoidal features with periods from 2*pi up to max_period."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=x.device, dtype=torch.float32) / half)
    args = x.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], -1)


class ScalarEmbedder(nn.Module):
    """Sinusoid + MLP for a scalar (timestep, age, years); NaN -> learned null vector."""

    def __init__(self, hidden: int, max_period: float, freq_dim: int = 256, nullable: bool = True):
        super().__init__()
        self.freq_dim, self.max_period = freq_dim, max_period
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.null = nn.Parameter(torch.zeros(hidden)) if nullable else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        missing = torch.isnan(x)
        emb = self.mlp(sinusoid(torch.nan_to_num(x, nan=0.0), self.freq_dim, self.max_period))
        if self.null is None:
            return emb
        return torch.where(missing[:, None], self.null.to(emb.dtype)[None], emb)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class Attention(nn.Module):
    def __init__(self, hidden: int, heads: int):
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden {hidden} not divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class DiTBlock(nn.Module):
    """Pre-norm transformer block with adaLN-Zero: shift/scale/gate from the condition vector."""

    def __init__(self, hidden: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden, heads)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        width = int(hidden * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(hidden, width), nn.GELU(approximate="tanh"), nn.Linear(width, hidden))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 6 * hidden))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        sh1, sc1, g1, sh2, sc2, g2 = self.ada(c).chunk(6, dim=-1)
        x = x + g1.unsqueeze(1) * self.attn(modulate(self.norm1(x), sh1, sc1))
        return x + g2.unsqueeze(1) * self.mlp(modulate(self.norm2(x), sh2, sc2))


class FinalLayer(nn.Module):
    def __init__(self, hidden: int, out_channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))
        self.linear = nn.Linear(hidden, out_channels)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.ada(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))


class DiT(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.cfg = cfg
        h = cfg.hidden
        self.num_tokens = int(np.prod(cfg.grid))  # latent tokens in and out (before patchify)
        p3 = cfg.patch ** 3
        self.x_embed = nn.Linear((cfg.in_channels + cfg.context_channels) * p3, h)
        model_grid = tuple(g // cfg.patch for g in cfg.grid)
        self.register_buffer("pos_embed", sincos_pos_embed_3d(model_grid, h)[None], persistent=False)
        self.t_embed = ScalarEmbedder(h, max_period=10000.0, nullable=False)
        self.cat_embed = nn.ModuleDict({k: nn.Embedding(n + 1, h) for k, n in cfg.categorical.items()})
        self.cont_embed = nn.ModuleDict({k: ScalarEmbedder(h, p) for k, p in cfg.continuous.items()})
        self.blocks = nn.ModuleList([DiTBlock(h, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth)])
        self.final = FinalLayer(h, cfg.in_channels * p3)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        def _xavier(m):
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

        self.apply(_xavier)
        for emb in self.cat_embed.values():
            nn.init.normal_(emb.weight, std=0.02)
        for scalar in [self.t_embed, *self.cont_embed.values()]:
            nn.init.normal_(scalar.mlp[0].weight, std=0.02)
            nn.init.normal_(scalar.mlp[2].weight, std=0.02)
        # adaLN-Zero: zero modulation => gates are 0 => each block is the identity at init
        for blk in self.blocks:
            nn.init.zeros_(blk.ada[-1].weight)
            nn.init.zeros_(blk.ada[-1].bias)
        nn.init.zeros_(self.final.ada[-1].weight)
        nn.init.zeros_(self.final.ada[-1].bias)
        nn.init.zeros_(self.final.linear.weight)
        nn.init.zeros_(self.final.linear.bias)

    def condition_vector(self, t: torch.Tensor, cond: dict) -> torch.Tensor:
        """Sum of the timestep and every condition embedding; absent keys count as unknown."""
        c = self.t_embed(t * 1000.0)  # DiT's timestep scale: t in [0, 1] -> [0, 1000]
        b = t.shape[0]
        for k, emb in self.cat_embed.items():
            idx = cond.get(k)
            idx = torch.zeros(b, dtype=torch.long, device=t.device) if idx is None else idx.long()
            c = c + emb(idx)
        for k, emb in self.cont_embed.items():
            val = cond.get(k)
            val = torch.full((b,), float("nan"), device=t.device) if val is None else val.float()
            c = c + emb(val)
        return c

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: dict | None = None) -> torch.Tensor:
        """x [B, 1200, 32], t [B] in [0, 1], cond name -> [B] tensor -> velocity [B, 1200, 32]."""
        cond = cond or {}
        inp = x
        if self.cfg.context_channels:
            ctx = cond.get(CONTEXT_KEY)
            if ctx is None:
                raise ValueError("this DiT needs cond['context'] (the baseline latent)")
            inp = torch.cat([x, ctx.to(x.dtype)], -1)
        h = self.x_embed(patchify_latent(inp, self.cfg.grid, self.cfg.patch)) + self.pos_embed.to(x.dtype)
        c = self.condition_vector(t, cond)
        for blk in self.blocks:
            h = blk(h, c)
        return unpatchify_latent(self.final(h, c), self.cfg.grid, self.cfg.patch)


def null_condition(model_cfg: DiTConfig, batch: int, device: torch.device | str = "cpu",
                   context: torch.Tensor | None = None) -> dict:
    """Every condition unknown (the unconditional branch); the context latent is kept."""
    cond = {k: torch.zeros(batch, dtype=torch.long, device=device) for k in model_cfg.categorical}
    cond.update({k: torch.full((batch,), float("nan"), device=device) for k in model_cfg.continuous})
    if context is not None:
        cond[CONTEXT_KEY] = context
    return cond


def drop_conditions(cond: dict, probs: dict[str, float], generator: torch.Generator | None = None,
                    all_prob: float = 0.0) -> dict:
    """Classifier-free dropout: each condition independently set to unknown with its probability,
    and, with ``all_prob``, every droppable condition (probability > 0) at once. The joint drop is
    DiT's learned null class: independent drops alone almost never leave all six conditions unknown
    together (0.1^6), which is the unconditional branch guidance samples against."""
    out = dict(cond)
    droppable = [k for k, p in probs.items() if k in cond and p > 0]
    if not droppable:
        return out
    n = cond[droppable[0]].shape[0]
    drop_all = torch.rand(n, generator=generator, device="cpu") < all_prob if all_prob > 0 else None
    for k in droppable:
        v = cond[k]
        drop = torch.rand(v.shape[0], generator=generator, device="cpu") < probs[k]
        drop = (drop | drop_all if drop_all is not None else drop).to(v.device)
        out[k] = torch.where(drop, torch.zeros_like(v), v) if not v.is_floating_point() else \
            torch.where(drop, torch.full_like(v, float("nan")), v)
    return out


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
