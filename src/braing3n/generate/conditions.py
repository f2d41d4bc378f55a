"""Condition vocabulary and latent normalisation, both built from the TRAINING split and saved
with the model (``generator.json``), so sampling needs nothing but the model folder.

Categorical conditions map each known value to index 1..K; index 0 is "unknown" (missing
metadata and classifier-free dropout). Continuous conditions are floats in years; NaN is unknown.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

# condition name (CLI / API) -> manifest column
CATEGORICAL_COLUMNS = {"disease": "diagnosis", "sex": "sex", "modality": "modality", "site": "site", "idh": "idh1"}
CONTINUOUS_COLUMNS = {"age": "age"}
# sinusoid max period (years) per continuous condition: resolves ~1 year up to a century
MAX_PERIOD = {"age": 1000.0, "years": 1000.0}
MISSING = {"", "nan", "none", "na", "n/a", "unknown", "<na>"}


def _is_missing(v) -> bool:
    if v is None:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    return str(v).strip().lower() in MISSING


@dataclass
class Vocabulary:
    categorical: dict[str, list[str]] = field(default_factory=dict)  # name -> known values (index i + 1)
    continuous: list[str] = field(default_factory=list)

    @property
    def model_categorical(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.categorical.items()}

    @property
    def model_continuous(self) -> dict[str, float]:
        return {k: MAX_PERIOD.get(k, 1000.0) for k in self.continuous}

    def index(self, name: str, value) -> int:
        """Index of ``value`` for categorical ``name``; 0 when missing; ValueError when never seen."""
        if _is_missing(value):
            return 0
        values = self.categorical[name]
        v = str(value).strip()
        if v not in values:
            raise ValueError(f"condition {name}={v!r} was not in the training data; known values: {values}")
        return values.index(v) + 1

    def encode_frame(self, df: pd.DataFrame, columns: dict[str, str]) -> dict[str, np.ndarray]:
        """Per-row condition arrays (int64 indices, float32 years with NaN) from manifest columns."""
        out: dict[str, np.ndarray] = {}
        for name in self.categorical:
            col = columns[name]
            vals = df[col] if col in df else pd.Series([None] * len(df))
            out[name] = np.array([self.index(name, v) for v in vals], dtype=np.int64)
        for name in self.continuous:
            col = columns[name]
            vals = pd.to_numeric(df[col], errors="coerce") if col in df else pd.Series([np.nan] * len(df))
            out[name] = vals.to_numpy(dtype=np.float32)
        return out

    def encode_request(self, conditions: dict, n: int, device: torch.device | str = "cpu") -> dict:
        """Sampling request {name: value or None} -> batched tensors; unset names are unknown."""
        unknown = set(conditions) - set(self.categorical) - set(self.continuous)
        if unknown:
            raise ValueError(f"unknown condition(s) {sorted(unknown)}; this model takes "
                             f"{sorted(self.categorical) + sorted(self.continuous)}")
        cond = {}
        for name in self.categorical:
            cond[name] = torch.full((n,), self.index(name, conditions.get(name)), dtype=torch.long, device=device)
        for name in self.continuous:
            v = conditions.get(name)
            cond[name] = torch.full((n,), float("nan") if _is_missing(v) else float(v), device=device)
        return cond

    def to_dict(self) -> dict:
        return {"categorical": self.categorical, "continuous": self.continuous}

    @classmethod
    def from_dict(cls, d: dict) -> Vocabulary:
        return cls(categorical={k: list(v) for k, v in d["categorical"].items()}, continuous=list(d["continuous"]))


def build_vocabulary(train: pd.DataFrame, categorical: dict[str, str], continuous: list[str]) -> Vocabulary:
    """Sorted known values of each categorical column in the training rows (missing excluded)."""
    cats = {}
    for name, col in categorical.items():
        vals = train[col] if col in train else pd.Series([], dtype=object)
        cats[name] = sorted({str(v).strip() for v in vals if not _is_missing(v)})
    return Vocabulary(categorical=cats, continuous=list(continuous))


@dataclass
class LatentNorm:
    """Per-channel affine normalisation of the latent: z = (x - mean) / std."""

    mean: np.ndarray  # [C]
    std: np.ndarray  # [C]

    @classmethod
    def fit(cls, latents: np.ndarray, eps: float = 1e-6) -> LatentNorm:
        """Statistics over scans and tokens of [N, T, C] TRAINING latents (float64 accumulation)."""
        flat = latents.reshape(-1, latents.shape[-1]).astype(np.float64)
        return cls(mean=flat.mean(0).astype(np.float32), std=np.maximum(flat.std(0), eps).astype(np.float32))

    def normalise(self, x):
        if isinstance(x, torch.Tensor):
            return (x - torch.as_tensor(self.mean, device=x.device)) / torch.as_tensor(self.std, device=x.device)
        return (x - self.mean) / self.std

    def denormalise(self, z):
        if isinstance(z, torch.Tensor):
            return z * torch.as_tensor(self.std, device=z.device) + torch.as_tensor(self.mean, device=z.device)
        return z * self.std + self.mean

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> LatentNorm:
        return cls(mean=np.asarray(d["mean"], np.float32), std=np.asarray(d["std"], np.float32))
