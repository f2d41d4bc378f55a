"""Engine tasks for `braing3n train mae` and `braing3n train decoder` (see braing3n.train.engine)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file

from braing3n.data.loader import VolumeDataset, select_split, train_batches, zscore
from braing3n.data.store import read_index
from braing3n.models.decoder import DecoderConfig, TokenizerModel, decoder_config, l1_loss
from braing3n.models.mae import MAE, MAEConfig, mae_config
from braing3n.paths import Layout
from braing3n.train.engine import TrainConfig, release_weights


def training_dataset(config: dict, splits: list[str] | None) -> VolumeDataset:
    """Usable store scans of every enabled cohort, restricted to ``splits`` of the manifest (when present)."""
    layout = Layout(config["results"])
    cohorts = [c for c, spec in config["cohorts"].items() if spec.get("enabled", True)]
    index = read_index([layout.store_index(c) for c in cohorts])
    manifest = layout.manifest if Path(layout.manifest).exists() else None
    return VolumeDataset(select_split(index, manifest, splits))


class MAETask:
    name = "mae"

    def __init__(self, cfg: MAEConfig, dataset: VolumeDataset, train: TrainConfig):
        self.cfg, self.dataset, self.train = cfg, dataset, train

    def build_model(self) -> torch.nn.Module:
        return MAE(self.cfg)

    def batches(self, rank: int, world: int, seed: int, start_step: int):
        return train_batches(self.dataset, self.train.batch_size, rank, world, seed, start_step,
                             self.train.num_workers, _device_of(self.train, rank))

    def loss(self, model, batch, device):
        out = model(zscore(batch.to(device, non_blocking=True)))
        return out["loss"], {}

    def model_config(self) -> dict:
        return {"mae": self.cfg.to_dict(), "n_train_scans": len(self.dataset)}

    def data_key(self) -> str:
        return files_key(self.dataset.paths)


class DecoderTask:
    name = "decoder"

    def __init__(self, mae_cfg: MAEConfig, dec_cfg: DecoderConfig, mae_weights: Path, dataset: VolumeDataset,
                 train: TrainConfig):
        self.mae_cfg, self.dec_cfg, self.mae_weights = mae_cfg, dec_cfg, Path(mae_weights)
        self.dataset, self.train = dataset, train

    def build_model(self) -> torch.nn.Module:
        model = TokenizerModel(self.mae_cfg, self.dec_cfg)
        state = load_file(str(self.mae_weights))
        enc = {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
        try:
            model.encoder.load_state_dict(enc)
        except RuntimeError as exc:
            raise RuntimeError(f"{self.mae_weights}: MAE weights do not fit the configured encoder: "
                               f"{str(exc).splitlines()[0]}") from exc
        model.freeze_encoder()
        return model

    def trainable_parameters(self, model: TokenizerModel):
        return model.trainable_parameters()

    def batches(self, rank: int, world: int, seed: int, start_step: int):
        return train_batches(self.dataset, self.train.batch_size, rank, world, seed, start_step,
                             self.train.num_workers, _device_of(self.train, rank))

    def loss(self, model, batch, device):
        vols = zscore(batch.to(device, non_blocking=True))
        return l1_loss(model(vols), vols), {}

    def model_config(self) -> dict:
        return {"mae": self.mae_cfg.to_dict(), "decoder": self.dec_cfg.to_dict(),
                "mae_weights": str(self.mae_weights), "n_train_scans": len(self.dataset)}

    def data_key(self) -> str:
        return files_key([*self.dataset.paths, self.mae_weights])


def files_key(paths) -> str:
    """Digest of the training files' paths, sizes and modification times (a rewritten store volume or
    retrained MAE changes it; stat only, so 35k files cost a fraction of a second)."""
    h = hashlib.blake2b(digest_size=16)
    for p in paths:
        st = os.stat(p)
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _device_of(train: TrainConfig, rank: int) -> str:
    return "cuda" if train.device != "cpu" and torch.cuda.is_available() else "cpu"


def mae_config_from(section: dict) -> MAEConfig:
    return mae_config(section.get("preset", "paper"), mask_ratio=section.get("mask_ratio"),
                      norm_pix_loss=section.get("norm_pix_loss"))


def read_mae_config(mae_dir: Path) -> MAEConfig:
    path = Path(mae_dir) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{path}: MAE model config not found (run `braing3n train mae` first)")
    d = json.loads(path.read_text())["model"]["mae"]
    d["img_size"] = tuple(d["img_size"])
    return MAEConfig(**d)


def make_mae_task(config: dict, train: TrainConfig) -> MAETask:
    extra = train.extra
    return MAETask(mae_config_from(extra), training_dataset(config, extra.get("splits")), train)


def make_decoder_task(config: dict, train: TrainConfig) -> DecoderTask:
    extra = train.extra
    mae_dir = Path(extra.get("mae_dir") or Layout(config["results"]).model_dir("mae"))
    weights = release_weights(mae_dir)
    if not weights.exists():
        raise FileNotFoundError(f"{weights}: MAE weights not found (run `braing3n train mae` first)")
    dec_cfg = decoder_config(extra.get("preset", "paper"), latent_dim=extra.get("latent_dim"))
    return DecoderTask(read_mae_config(mae_dir), dec_cfg, weights, training_dataset(config, extra.get("splits")), train)
