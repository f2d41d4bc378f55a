"""Public tokenizer API used by the generator and the evaluation stage.

    tok = load_tokenizer("results/models/decoder", device="auto")
    out = tok.encode(zscore(vols))     # latent [B,1200,32], cls [B,D], mean [B,D]
    vols = tok.decode(out["latent"])   # [B,1,160,192,160] (z-score units)
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch

from braing3n.models.decoder import DecoderConfig, TokenizerModel
from braing3n.models.mae import MAEConfig, pool_token_grid
from braing3n.train.checkpoint import load_weights
from braing3n.train.distributed import pick_device
from braing3n.train.engine import release_weights


class Tokenizer:
    """Frozen encoder + projection + decoder in eval mode; bf16 autocast on CUDA, float32 outputs."""

    def __init__(self, model: TokenizerModel, device: torch.device):
        self.model, self.device = model.eval().to(device), device
        self.mae_cfg, self.dec_cfg = model.mae_cfg, model.dec_cfg

    def _autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @torch.no_grad()
    def encode(self, vols: torch.Tensor) -> dict[str, torch.Tensor]:
        """z-scored [B, 1, 160, 192, 160] -> latent [B, 1200, 32], cls [B, D], mean [B, D] (mean of patch tokens)."""
        with self._autocast():
            tokens, cls = self.model.encode_tokens(vols.to(self.device, non_blocking=True).float())
            latent = self.model.latent_from_tokens(tokens)
        return {"latent": latent.float(), "cls": cls.float(), "mean": tokens.float().mean(1),
                "grid": pool_token_grid(tokens, self.mae_cfg.grid)}

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """[B, 1200, 32] -> [B, 1, 160, 192, 160] in z-score units."""
        with self._autocast():
            out = self.model.decode(latent.to(self.device).float())
        return out.float()


def load_tokenizer(decoder_model_dir: str | Path, device: str | torch.device = "auto") -> Tokenizer:
    """Tokenizer from a `braing3n train decoder` folder (config.json + release weights)."""
    d = Path(decoder_model_dir)
    cfg_path = d / "config.json"
    if not cfg_path.exists():
        raise FileNotFoundError(f"{cfg_path}: tokenizer config not found (run `braing3n train decoder` first)")
    model_cfg = json.loads(cfg_path.read_text())["model"]
    mae = dict(model_cfg["mae"], img_size=tuple(model_cfg["mae"]["img_size"]))
    dec = dict(model_cfg["decoder"], channels=tuple(model_cfg["decoder"]["channels"]))
    model = TokenizerModel(MAEConfig(**mae), DecoderConfig(**dec))
    load_weights(model, release_weights(d))
    dev = device if isinstance(device, torch.device) else pick_device(device)
    return Tokenizer(model, dev)
