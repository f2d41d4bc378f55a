"""AutoencoderKL baseline tokenizer (MONAI ``AutoencoderKL``) and its shared-engine training task.

With 5 levels the encoder downsamples by 16 per axis, so a 160x192x160 volume becomes a
10x12x10 x C latent: the same 1,200 positions as the MAE tokens, with C (the bottleneck size,
8/16/32/64) numbers each - the MAE tokenizer's 32 dims per token sit in that range. Loss: voxel
L1 (as the MAE decoder) + ``kl_weight`` x KL. Non-local attention is off: at 9,600+ positions
it would dominate memory, and the comparison is about the bottleneck, not attention.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from monai.networks.nets import AutoencoderKL

from braing3n.train.engine import TrainConfig


@dataclass
class AEKLConfig:
    latent_channels: int = 32
    channels: tuple[int, ...] = (32, 64, 64, 128, 128)
    num_res_blocks: int = 2
    kl_weight: float = 1e-6
    splits: list = field(default_factory=lambda: ["train"])

    def to_dict(self) -> dict:
        return asdict(self)


def build_aekl(cfg: AEKLConfig) -> AutoencoderKL:
    groups = min(32, *cfg.channels)
    if any(c % groups for c in cfg.channels):
        raise ValueError(f"aekl channels {cfg.channels} must all be divisible by {groups} (GroupNorm groups)")
    return AutoencoderKL(spatial_dims=3, in_channels=1, out_channels=1, num_res_blocks=cfg.num_res_blocks,
                         channels=tuple(cfg.channels), attention_levels=(False,) * len(cfg.channels),
                         latent_channels=cfg.latent_channels, norm_num_groups=groups,
                         with_encoder_nonlocal_attn=False, with_decoder_nonlocal_attn=False)


def aekl_loss(model: torch.nn.Module, vols: torch.Tensor, kl_weight: float) -> tuple[torch.Tensor, dict]:
    """Voxel L1 + kl_weight x KL(q(z|x) || N(0, I)) (summed over latent, averaged over batch)."""
    recon, mu, sigma = model(vols)
    l1 = (recon.float() - vols).abs().mean()
    var = sigma.float() ** 2
    kl = 0.5 * (mu.float() ** 2 + var - torch.log(var.clamp_min(1e-12)) - 1).flatten(1).sum(1).mean()
    return l1 + kl_weight * kl, {"l1": float(l1.detach()), "kl": float(kl.detach())}


@torch.no_grad()
def encode_tokens(model: AutoencoderKL, vols: torch.Tensor) -> torch.Tensor:
    """[B,1,160,192,160] z-scored -> posterior means as tokens [B, 10*12*10, C] (row-major grid)."""
    mu, _ = model.encode(vols)
    return mu.float().flatten(2).transpose(1, 2)


class AEKLTask:
    name = "aekl"

    def __init__(self, cfg: AEKLConfig, dataset, train: TrainConfig):
        self.cfg, self.dataset, self.train = cfg, dataset, train

    def build_model(self) -> torch.nn.Module:
        return build_aekl(self.cfg)

    def batches(self, rank: int, world: int, seed: int, start_step: int):
        from braing3n.data.loader import train_batches

        device = "cuda" if self.train.device != "cpu" and torch.cuda.is_available() else "cpu"
        return train_batches(self.dataset, self.train.batch_size, rank, world, seed, start_step,
                             self.train.num_workers, device)

    def loss(self, model, batch, device):
        from braing3n.data.loader import zscore

        return aekl_loss(model, zscore(batch.to(device, non_blocking=True)), self.cfg.kl_weight)

    def model_config(self) -> dict:
        return {"aekl": self.cfg.to_dict(), "n_train_scans": len(self.dataset)}


def aekl_config_from(extra: dict) -> AEKLConfig:
    known = {k: extra[k] for k in ("latent_channels", "channels", "num_res_blocks", "kl_weight", "splits")
             if k in extra}
    if "channels" in known:
        known["channels"] = tuple(known["channels"])
    return AEKLConfig(**known)


def make_aekl_task(config: dict, train: TrainConfig) -> AEKLTask:
    """Factory registered in braing3n.train.cli.TASKS as "aekl"."""
    from braing3n.tokenizer.tasks import training_dataset

    cfg = aekl_config_from(train.extra)
    return AEKLTask(cfg, training_dataset(config, list(cfg.splits)), train)


def load_aekl(model_dir: str, device: torch.device | str = "cpu") -> tuple[AutoencoderKL, AEKLConfig]:
    """Trained AutoencoderKL from a `braing3n train aekl` folder (config.json + release weights)."""
    import json
    from pathlib import Path

    from braing3n.train.engine import load_weights, release_weights

    path = Path(model_dir) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{path}: AutoencoderKL config not found (run `braing3n train aekl` first)")
    cfg = aekl_config_from(json.loads(path.read_text())["model"]["aekl"])
    model = build_aekl(cfg)
    load_weights(model, release_weights(model_dir))
    return model.to(device).eval(), cfg
