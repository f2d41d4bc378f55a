"""Encoder adapters: a batch of z-scored 160x192x160 volumes -> pooled embeddings {"cls", "mean"}.

- random_vit: the floor - the project's MAE encoder architecture, randomly initialised (or a
  MONAI ViT on the model grid with 16^3 patches when no MAE config is at hand).
- brainiac: MONAI ViT-B (768 x 12) on the volume resized to 96^3 (BrainIAC's input).
- brainsegfounder: the Swin-UNETR encoder (MONAI ``SwinUNETR.swinViT``), deepest stage pooled.
- medicalnet: MONAI 3D ResNet (MedicalNet layout), global average pool of the last stage.
- aekl: the project's AutoencoderKL baseline (`braing3n train aekl`, same data and engine as the
  MAE), posterior means on the 10x12x10 latent grid, pooled like the MAE's tokens (mean, grid).

External weights are never downloaded: the user supplies a file path in
``evaluate.encoders.<name>.weights``; a missing file is a one-line error saying so. CNN-style
encoders have no CLS token, so they give "mean" only (and "max" as a second pooling).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.nets import SwinUNETR, ViT, resnet
from monai.networks.nets.resnet import get_medicalnet_pretrained_resnet_args

from braing3n.data.geometry import MODEL_SHAPE

EXTERNAL = ("brainiac", "brainsegfounder", "medicalnet")
STRIP_PREFIXES = ("module.", "model.", "backbone.", "encoder.", "net.", "swinViT.", "vit.")


def load_user_weights(model: torch.nn.Module, path: str | None, name: str, min_fraction: float = 0.5) -> None:
    """Load a user-supplied checkpoint into ``model`` by key name (prefixes stripped, shapes checked)."""
    if not path:
        raise FileNotFoundError(f"{name}: no weight file configured; download the published checkpoint yourself "
                                f"and set evaluate.encoders.{name}.weights (weights are never downloaded)")
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: {name} weight file not found (set evaluate.encoders.{name}.weights)")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(p))
    else:
        state = torch.load(p, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "net", "teacher"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    own = model.state_dict()
    matched = {}
    for k, v in state.items():
        key = k
        for _ in range(3):  # nested wrappers such as module.backbone.
            for pre in STRIP_PREFIXES:
                if key not in own and key.startswith(pre):
                    key = key[len(pre):]
        if key in own and tuple(own[key].shape) == tuple(v.shape):
            matched[key] = v
    fraction = len(matched) / max(1, len(own))
    if fraction < min_fraction:
        raise ValueError(f"{p}: only {len(matched)} of {len(own)} {name} parameters match by name and shape "
                         f"({fraction:.0%}); is this the right checkpoint?")
    model.load_state_dict(matched, strict=False)


class Encoder(torch.nn.Module):
    """Base: ``forward(x [B,1,160,192,160]) -> {"cls"?: [B,D], "mean": [B,D]}``."""

    name = "encoder"


class ViTEncoder(Encoder):
    """MONAI ViT with a CLS token; tokens after the final norm are pooled (CLS and mean)."""

    def __init__(self, name: str, img_size: tuple, hidden: int, layers: int, heads: int, patch: int = 16):
        super().__init__()
        self.name, self.img_size = name, tuple(img_size)
        self.vit = ViT(in_channels=1, img_size=self.img_size, patch_size=patch, hidden_size=hidden,
                       mlp_dim=4 * hidden, num_layers=layers, num_heads=heads, classification=True)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if tuple(x.shape[2:]) != self.img_size:
            x = F.interpolate(x, size=self.img_size, mode="trilinear", align_corners=False)
        tokens = self.vit.patch_embedding(x)
        tokens = torch.cat([self.vit.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1)
        for blk in self.vit.blocks:
            tokens = blk(tokens)
        tokens = self.vit.norm(tokens)
        return {"cls": tokens[:, 0], "mean": tokens[:, 1:].mean(1)}


class MAEArchEncoder(Encoder):
    """The project's own MAE encoder architecture with its pre-training initialisation, untrained:
    the fairest floor, since only the learned weights differ from the real encoder."""

    def __init__(self, mae_config: dict):
        super().__init__()
        from braing3n.models.mae import MAE, MAEConfig

        self.name = "random_vit"
        cfg = dict(mae_config, img_size=tuple(mae_config["img_size"])) if "img_size" in mae_config else mae_config
        self.encoder = MAE(MAEConfig(**cfg)).encoder
        self.grid = MAEConfig(**cfg).grid

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        tokens, cls = self.encoder(x)
        from braing3n.models.mae import pool_token_grid

        return {"cls": cls, "mean": tokens.mean(1), "grid": pool_token_grid(tokens, self.grid)}


class AEKLEncoder(Encoder):
    """A trained AutoencoderKL's posterior means as tokens: no CLS, mean- and grid-pooled."""

    def __init__(self, model_dir: str):
        super().__init__()
        from braing3n.models.aekl import load_aekl

        self.name = "aekl"
        self.model, cfg = load_aekl(model_dir)
        self.downsample = 2 ** (len(cfg.channels) - 1)  # one /2 per level after the first

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        from braing3n.models.aekl import encode_tokens
        from braing3n.models.mae import pool_token_grid

        tokens = encode_tokens(self.model, x)
        grid = tuple(s // self.downsample for s in x.shape[2:])
        return {"mean": tokens.mean(1), "grid": pool_token_grid(tokens, grid)}


class SwinEncoder(Encoder):
    """Swin-UNETR encoder (BrainSegFounder's backbone); deepest stage, mean and max pooled."""

    def __init__(self, feature_size: int = 48):
        super().__init__()
        self.name = "brainsegfounder"
        self.swin = SwinUNETR(in_channels=1, out_channels=1, feature_size=feature_size).swinViT

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        deepest = self.swin(x, normalize=True)[-1]
        return {"mean": deepest.mean(dim=(2, 3, 4)), "max": deepest.amax(dim=(2, 3, 4))}


class ResNetEncoder(Encoder):
    """MedicalNet-layout 3D ResNet trunk, last stage mean and max pooled (3D-FID practice: mean)."""

    def __init__(self, depth: int = 50):
        super().__init__()
        self.name = "medicalnet"
        bias_downsample, shortcut = get_medicalnet_pretrained_resnet_args(depth)
        self.net = getattr(resnet, f"resnet{depth}")(spatial_dims=3, n_input_channels=1, feed_forward=False,
                                                     shortcut_type=shortcut, bias_downsample=bias_downsample)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        x = n.maxpool(n.act(n.bn1(n.conv1(x)))) if not n.no_max_pool else n.act(n.bn1(n.conv1(x)))
        return n.layer4(n.layer3(n.layer2(n.layer1(x))))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.trunk(x)
        return {"mean": f.mean(dim=(2, 3, 4)), "max": f.amax(dim=(2, 3, 4))}


def build_encoder(name: str, spec: dict, seed: int = 0, mae_config: dict | None = None,
                  aekl_dir: str | None = None) -> Encoder:
    """Adapter by name; external encoders load ``spec['weights']`` (never downloaded).

    ``random_vit`` uses the trained tokenizer's MAE architecture (``mae_config``) when given,
    else a MONAI ViT of ``spec`` width/depth on the model grid. ``aekl`` loads the trained
    AutoencoderKL folder ``aekl_dir``.
    """
    torch.manual_seed(seed)  # the random floor is reproducible; loaded weights overwrite the init
    if name == "random_vit" and mae_config is not None:
        enc = MAEArchEncoder(mae_config)
    elif name == "random_vit":
        enc = ViTEncoder("random_vit", MODEL_SHAPE, spec.get("hidden", 768), spec.get("layers", 12),
                         spec.get("heads", 12))
    elif name == "brainiac":
        enc = ViTEncoder("brainiac", (96, 96, 96), 768, 12, 12)
    elif name == "brainsegfounder":
        enc = SwinEncoder(spec.get("feature_size", 48))
    elif name == "medicalnet":
        enc = ResNetEncoder(spec.get("depth", 50))
    elif name == "aekl" and aekl_dir:
        enc = AEKLEncoder(aekl_dir)
    elif name == "aekl":
        raise ValueError("encoder 'aekl' needs the trained AutoencoderKL folder (braing3n train aekl)")
    else:
        raise ValueError(f"unknown encoder {name!r}; known: random_vit, aekl, {', '.join(EXTERNAL)}")
    if name in EXTERNAL and not spec.get("random_weights", False):
        target = enc.vit if name == "brainiac" else enc.swin if name == "brainsegfounder" else enc.net
        load_user_weights(target, spec.get("weights"), name)
    return enc.eval()


@torch.no_grad()
def embed_batches(encoder: Encoder, batches: Iterator[tuple[list[int], torch.Tensor]],
                  device: torch.device) -> dict[str, np.ndarray]:
    """Run the encoder over (indices, raw float16 volumes) batches; z-score on device; concat per key."""
    from braing3n.data.loader import zscore

    encoder = encoder.to(device)
    out: dict[str, list] = {}
    order: list[int] = []
    for idx, vols in batches:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            feats = encoder(zscore(vols.to(device)))
        for k, v in feats.items():
            out.setdefault(k, []).append(v.float().cpu().numpy())
        order.extend(idx)
    inv = np.argsort(np.asarray(order))
    return {k: np.concatenate(v)[inv] for k, v in out.items()}
