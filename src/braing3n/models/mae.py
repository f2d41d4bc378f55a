"""3D masked autoencoder (ViT) on 160x192x160 volumes: 16^3 patches -> 10x12x10 = 1,200 tokens.

Compact own code on ``F.scaled_dot_product_attention`` rather than MONAI's
``MaskedAutoEncoderViT``: MONAI 1.6 builds its TransformerBlocks without SDPA (explicit
softmax(QK^T) materialises B x heads x 1200 x 1200 scores in the decoder), samples the mask with
``torch.multinomial`` on the CPU every step (a host round-trip), runs the CLS token through
the decoder, and its 3D sin-cos embedding needs widths divisible by 6 (the 512-wide decoder is
not). ``braing3n bench tokenizer`` times both (``mae-monai`` row) so the choice is measured.

Layout follows facebookresearch/mae: pre-norm blocks, CLS token, fixed sin-cos positional
embeddings (3D here), per-sample random masking by argsort of uniform noise, a shallow decoder
on all tokens, MSE on the masked patches (optionally per-patch normalised targets).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

IMG = (160, 192, 160)
PATCH = 16


@dataclass
class MAEConfig:
    width: int = 1152
    depth: int = 12
    heads: int = 16
    dec_width: int = 512
    dec_depth: int = 8
    dec_heads: int = 16
    mlp_ratio: float = 4.0
    mask_ratio: float = 0.7
    norm_pix_loss: bool = False
    img_size: tuple[int, int, int] = IMG
    patch: int = PATCH

    @property
    def grid(self) -> tuple[int, int, int]:
        return tuple(s // self.patch for s in self.img_size)

    @property
    def n_tokens(self) -> int:
        return math.prod(self.grid)

    @property
    def n_keep(self) -> int:
        return self.n_tokens - round(self.n_tokens * self.mask_ratio)

    def to_dict(self) -> dict:
        return asdict(self)


# paper: the released model card (width 1152, 16 heads); vitb: the common ViT-B alternative.
PRESETS = {
    "paper": dict(width=1152, depth=12, heads=16, dec_width=512, dec_depth=8, dec_heads=16),
    "vitb": dict(width=768, depth=12, heads=12, dec_width=512, dec_depth=8, dec_heads=16),
    "tiny": dict(width=96, depth=2, heads=4, dec_width=64, dec_depth=1, dec_heads=4),
}


def mae_config(preset: str = "paper", **overrides) -> MAEConfig:
    if preset not in PRESETS:
        raise ValueError(f"unknown MAE preset {preset!r}; choose one of {sorted(PRESETS)}")
    kw = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
    if "img_size" in kw:
        kw["img_size"] = tuple(kw["img_size"])
    return MAEConfig(**kw)


def sincos_pos_embed_3d(grid: tuple[int, int, int], dim: int) -> torch.Tensor:
    """Fixed [N, dim] embedding: each axis gets 2*(dim//6) channels of sin/cos; the rest stay 0."""
    per_axis = 2 * (dim // 6)
    coords = torch.meshgrid(*[torch.arange(g, dtype=torch.float64) for g in grid], indexing="ij")
    omega = 1.0 / 10000 ** (torch.arange(per_axis // 2, dtype=torch.float64) / max(1, per_axis // 2))
    parts = []
    for c in coords:
        out = c.reshape(-1, 1) * omega[None]
        parts += [torch.sin(out), torch.cos(out)]
    emb = torch.cat(parts, dim=1)
    return F.pad(emb, (0, dim - emb.shape[1])).float()


def pool_token_grid(tokens: torch.Tensor, grid: tuple[int, int, int], pool: int = 2,
                    channels_last: bool = False) -> torch.Tensor:
    """[B, prod(grid), D] encoder tokens -> [B, prod(grid // pool) * D]: the token grid average-pooled
    (a remainder along an axis is dropped), flattened channel-major or, with ``channels_last``,
    position-major (each pooled cell's D values together).

    The "grid" probe feature: it keeps where things are (ventricles, medial temporal lobe, a
    tumour), which the mean over all tokens averages away. 10x12x10 at pool 2 -> 5x6x5 x D.
    """
    b, _, d = tokens.shape
    vol = F.avg_pool3d(tokens.transpose(1, 2).reshape(b, d, *grid).float(), pool)
    return (vol.permute(0, 2, 3, 4, 1) if channels_last else vol).flatten(1)


def patchify(vols: torch.Tensor, patch: int = PATCH) -> torch.Tensor:
    """[B, 1, D, H, W] -> [B, N, patch^3], tokens in (d, h, w) raster order."""
    b, c, d, h, w = vols.shape
    p = patch
    x = vols.reshape(b, c, d // p, p, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 6, 3, 5, 7, 1).reshape(b, (d // p) * (h // p) * (w // p), p**3 * c)


def unpatchify(tokens: torch.Tensor, grid: tuple[int, int, int], patch: int = PATCH) -> torch.Tensor:
    """Inverse of ``patchify`` (one channel)."""
    b = tokens.shape[0]
    gd, gh, gw = grid
    p = patch
    x = tokens.reshape(b, gd, gh, gw, p, p, p, 1).permute(0, 7, 1, 4, 2, 5, 3, 6)
    return x.reshape(b, 1, gd * p, gh * p, gw * p)


class Block(nn.Module):
    """Pre-norm transformer block; attention through SDPA (flash / memory-efficient kernels on GPU)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        x = x + self.proj(a)
        return x + self.mlp(self.norm2(x))


class MAEEncoder(nn.Module):
    """Patch embedding + CLS + fixed pos-emb + ``depth`` blocks + final norm. Used frozen by the tokenizer."""

    def __init__(self, cfg: MAEConfig):
        super().__init__()
        self.cfg = cfg
        self.patch_embed = nn.Linear(cfg.patch**3, cfg.width)  # == Conv3d(k=s=16) on patchified input
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.register_buffer("pos_embed", sincos_pos_embed_3d(cfg.grid, cfg.width)[None], persistent=False)
        self.blocks = nn.ModuleList(Block(cfg.width, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.width, eps=1e-6)

    def embed(self, patches: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(patches)
        return x + self.pos_embed.to(x.dtype)  # stay in bf16 under autocast

    def run(self, x: torch.Tensor) -> torch.Tensor:
        """Prepend CLS, run the blocks, norm: [B, n, D] -> [B, 1 + n, D]."""
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def forward(self, vols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """All 1,200 tokens, no masking: (tokens [B, 1200, D], cls [B, D])."""
        out = self.run(self.embed(patchify(vols, self.cfg.patch)))
        return out[:, 1:], out[:, 0]


class MAE(nn.Module):
    """``forward(vols)`` -> dict(loss, pred [B, N, p^3], mask [B, N] with 1 = masked)."""

    def __init__(self, cfg: MAEConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = MAEEncoder(cfg)
        self.dec_embed = nn.Linear(cfg.width, cfg.dec_width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.dec_width))
        self.register_buffer("dec_pos_embed", sincos_pos_embed_3d(cfg.grid, cfg.dec_width)[None], persistent=False)
        self.dec_blocks = nn.ModuleList(Block(cfg.dec_width, cfg.dec_heads, cfg.mlp_ratio)
                                        for _ in range(cfg.dec_depth))
        self.dec_norm = nn.LayerNorm(cfg.dec_width, eps=1e-6)
        self.dec_pred = nn.Linear(cfg.dec_width, cfg.patch**3)
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.normal_(self.encoder.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def random_masking(self, b: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-sample uniform masking of exactly ``N - n_keep`` tokens: (ids_keep, ids_restore, mask)."""
        n = self.cfg.n_tokens
        ids_shuffle = torch.argsort(torch.rand(b, n, device=device), dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        mask = torch.ones(b, n, device=device)
        mask[:, : self.cfg.n_keep] = 0
        return ids_shuffle[:, : self.cfg.n_keep], ids_restore, torch.gather(mask, 1, ids_restore)

    def forward(self, vols: torch.Tensor) -> dict[str, torch.Tensor]:
        target = patchify(vols, self.cfg.patch)
        x = self.encoder.embed(target)
        b, n, d = x.shape
        ids_keep, ids_restore, mask = self.random_masking(b, x.device)
        x = torch.gather(x, 1, ids_keep[..., None].expand(-1, -1, d))
        latent = self.encoder.run(x)[:, 1:]
        y = self.dec_embed(latent)
        full = torch.cat([y, self.mask_token.to(y.dtype).expand(b, n - y.shape[1], -1)], dim=1)
        full = torch.gather(full, 1, ids_restore[..., None].expand(-1, -1, y.shape[-1]))
        full = full + self.dec_pos_embed.to(full.dtype)
        for blk in self.dec_blocks:
            full = blk(full)
        pred = self.dec_pred(self.dec_norm(full))
        return {"loss": self.masked_loss(pred, target, mask), "pred": pred, "mask": mask}

    def masked_loss(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        target = target.float()
        if self.cfg.norm_pix_loss:
            mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
            target = (target - mean) / (var + 1e-6).sqrt()
        per_patch = ((pred.float() - target) ** 2).mean(-1)
        return (per_patch * mask).sum() / mask.sum()


def transformer_flops(n: int, d: int, layers: int, mlp_ratio: float = 4.0) -> float:
    """Forward FLOPs of ``layers`` blocks on ``n`` tokens of width ``d`` (matmuls only)."""
    return layers * (2 * n * d * 3 * d + 2 * n * d * d + 4 * n * n * d + 2 * 2 * n * d * int(d * mlp_ratio))


def mae_flops(cfg: MAEConfig) -> float:
    """Forward FLOPs of one MAE training sample (embed, encoder on kept tokens, decoder, head)."""
    n, keep, p3 = cfg.n_tokens, cfg.n_keep + 1, cfg.patch**3
    return (2 * n * p3 * cfg.width + transformer_flops(keep, cfg.width, cfg.depth, cfg.mlp_ratio)
            + 2 * keep * cfg.width * cfg.dec_width
            + transformer_flops(n, cfg.dec_width, cfg.dec_depth, cfg.mlp_ratio) + 2 * n * cfg.dec_width * p3)
