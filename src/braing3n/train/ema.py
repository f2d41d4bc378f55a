"""Exponential moving average of the trainable weights (the released weights)."""

from __future__ import annotations

import torch


class EMA:
    """EMA over the floating-point entries of ``model.state_dict()`` except frozen parameters (float32).

    The decay ramps as ``min(decay, (1 + n) / (10 + n))`` so short runs (demo, tests) still get
    a meaningful average; at paper length it is the plain ``decay`` (0.9999, as in DiT).
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        # frozen parameters (e.g. the tokenizer's MAE encoder) are not averaged: they keep their exact values
        frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
        self.shadow = {k: v.detach().float().clone() for k, v in model.state_dict().items()
                       if v.dtype.is_floating_point and k not in frozen}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, v in model.state_dict().items():
            if k in self.shadow:
                self.shadow[k].mul_(d).add_(v.detach().float(), alpha=1 - d)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        self.decay, self.updates = state["decay"], state["updates"]
        self.shadow = {k: v.clone() for k, v in state["shadow"].items()}

    def weights(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The model's state dict with EMA values in place of the averaged entries (model dtypes)."""
        out = {}
        for k, v in model.state_dict().items():
            out[k] = self.shadow[k].to(v.dtype) if k in self.shadow else v
        return out
