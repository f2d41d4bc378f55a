"""Phase 2 tokenizer model: frozen MAE encoder -> linear 32-d projection -> CNN decoder.

Latent = ``proj(tokens)``: [B, 1200, 32], i.e. a 10x12x10 grid of 32 channels. The CNN decoder
(conv, then four x2 nearest-upsample + conv stages with GroupNorm/SiLU, the reference's
256-128-64-32-16 channels) maps it back to [B, 1, 160, 192, 160]. The encoder stays in eval mode
with ``requires_grad=False`` whatever ``train()`` is called with, and runs under ``no_grad``.
On CUDA the decoder runs channels-last (``torch.channels_last_3d``), which cuDNN prefers under
bf16; on CPU it stays contiguous: PyTorch's CPU GroupNorm on channels-last tensors is off by
~1e-2 from float64 and changes with the thread count (measured on the tiny decoder: 9e-3 and
1.4e-2; contiguous 6e-6 and 7e-6), which made reconstruction tables depend on the core count.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from braing3n.models.mae import MAEConfig, MAEEncoder


@dataclass
class DecoderConfig:
    latent_dim: int = 32
    channels: tuple[int, ...] = (256, 128, 64, 32, 16)
    groups: int = 8

    def to_dict(self) -> dict:
        return asdict(self)


DECODER_PRESETS = {
    "paper": dict(latent_dim=32, channels=(256, 128, 64, 32, 16)),
    "tiny": dict(latent_dim=32, channels=(16, 16, 8, 4, 4)),
}


def decoder_config(preset: str = "paper", **overrides) -> DecoderConfig:
    if preset not in DECODER_PRESETS:
        raise ValueError(f"unknown decoder preset {preset!r}; choose one of {sorted(DECODER_PRESETS)}")
    kw = {**DECODER_PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
    kw["channels"] = tuple(kw["channels"])
    return DecoderConfig(**kw)


def _norm(ch: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(groups, ch), ch)


class CNNDecoder(nn.Module):
    """[B, C, 10, 12, 10] -> [B, 1, 160, 192, 160]: one x2 upsampling per channel step."""

    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        ch = cfg.channels
        layers: list[nn.Module] = [nn.Conv3d(cfg.latent_dim, ch[0], 3, padding=1)]
        for a, b in zip(ch[:-1], ch[1:], strict=True):
            layers += [_norm(a, cfg.groups), nn.SiLU(), nn.Upsample(scale_factor=2, mode="nearest"),
                       nn.Conv3d(a, b, 3, padding=1)]
        layers += [_norm(ch[-1], cfg.groups), nn.SiLU(), nn.Conv3d(ch[-1], 1, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        fmt = torch.channels_last_3d if z.is_cuda else torch.contiguous_format  # see the module docstring
        return self.net(z.contiguous(memory_format=fmt))


class TokenizerModel(nn.Module):
    """``forward(vols)`` -> reconstruction; ``encode`` / ``decode`` for export and generation."""

    def __init__(self, mae_cfg: MAEConfig, dec_cfg: DecoderConfig):
        super().__init__()
        self.mae_cfg, self.dec_cfg = mae_cfg, dec_cfg
        self.encoder = MAEEncoder(mae_cfg)
        self.proj = nn.Linear(mae_cfg.width, dec_cfg.latent_dim)
        self.decoder = CNNDecoder(dec_cfg)
        self.freeze_encoder()

    def freeze_encoder(self) -> None:
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self.encoder.eval()

    def train(self, mode: bool = True) -> TokenizerModel:
        super().train(mode)
        self.encoder.eval()  # frozen: no dropout/norm-statistics changes, ever
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [*self.proj.parameters(), *self.decoder.parameters()]

    @torch.no_grad()
    def encode_tokens(self, vols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(vols)

    def latent_from_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.proj(tokens)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """[B, 1200, C] -> [B, 1, 160, 192, 160]."""
        b, n, c = latent.shape
        gd, gh, gw = self.mae_cfg.grid
        if n != gd * gh * gw:
            raise ValueError(f"decode: latent has {n} tokens, expected {gd * gh * gw} ({gd}x{gh}x{gw})")
        z = latent.transpose(1, 2).reshape(b, c, gd, gh, gw)
        return self.decoder(z).contiguous()

    def forward(self, vols: torch.Tensor) -> torch.Tensor:
        tokens, _ = self.encode_tokens(vols)
        return self.decode(self.latent_from_tokens(tokens))


def l1_loss(recon: torch.Tensor, vols: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(recon.float(), vols.float())


def decoder_flops(mae_cfg: MAEConfig, cfg: DecoderConfig) -> float:
    """Forward FLOPs of the CNN decoder for one volume (3x3x3 convs)."""
    vox = mae_cfg.n_tokens
    ch = cfg.channels
    f = 2 * 27 * cfg.latent_dim * ch[0] * vox
    for a, b in zip(ch[:-1], ch[1:], strict=True):
        vox *= 8
        f += 2 * 27 * a * b * vox
    return f + 2 * 27 * ch[-1] * vox
