"""Training tasks `dit` and `dit-long` for the shared engine (`braing3n train dit ...`).

Both regress the flow-matching velocity (braing3n.flow) on per-channel-normalised latents.
`dit` models p(latent | disease, sex, modality, site, idh, age); `dit-long` models
p(follow-up latent | baseline latent, years to follow-up, baseline disease/sex/modality/age),
the baseline latent concatenated channel-wise to x_t. Every condition is dropped to "unknown"
with its own probability (classifier-free guidance). ``export`` writes ``generator.json``
(model config, vocabulary, latent statistics) next to the weights: the model folder is
self-contained for `load_generator`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from braing3n import flow
from braing3n.generate.conditions import (
    CATEGORICAL_COLUMNS,
    CONTINUOUS_COLUMNS,
    LatentNorm,
    Vocabulary,
    build_vocabulary,
)
from braing3n.generate.data import embeddings_paths, join_latents, join_pairs, load_latents, read_manifest
from braing3n.models.dit import CONTEXT_KEY, GRID, DiT, DiTConfig, drop_conditions
from braing3n.paths import Layout
from braing3n.train.sampling import batch_indices

GENERATOR_JSON = "generator.json"
COLUMNS = {**CATEGORICAL_COLUMNS, **CONTINUOUS_COLUMNS, "years": "years"}
DEFAULT_CONDITIONS = {"dit": ["disease", "sex", "modality", "site", "idh", "age"],
                      "dit_long": ["disease", "sex", "modality", "age"]}


class GeneratorTask:
    """Flow-matching task over in-memory normalised latents (fp16 in RAM: 35k scans ~ 2.7 GB)."""

    def __init__(self, kind: str, target: np.ndarray, conds: dict[str, np.ndarray], vocab: Vocabulary,
                 norm: LatentNorm, model_cfg: DiTConfig, batch_size: int, drop_prob: dict[str, float],
                 time_sampler: str = "uniform", context: np.ndarray | None = None, n_subjects: int = 0,
                 drop_all_prob: float = 0.0):
        if kind not in DEFAULT_CONDITIONS:
            raise ValueError(f"unknown generator kind {kind!r}")
        self.name, self.kind = kind.replace("_", "-"), kind
        self.target = norm.normalise(target).astype(np.float16)
        self.context = None if context is None else norm.normalise(context).astype(np.float16)
        self.conds, self.vocab, self.norm, self.model_cfg = conds, vocab, norm, model_cfg
        self.batch_size, self.drop_prob, self.time_sampler = batch_size, drop_prob, time_sampler
        self.n_subjects, self.drop_all_prob = n_subjects, drop_all_prob

    def build_model(self) -> DiT:
        return DiT(self.model_cfg)

    def batches(self, rank: int, world: int, seed: int, start_step: int) -> Iterator[dict]:
        for idx in batch_indices(len(self.target), self.batch_size, rank, world, seed, start_step):
            cond = {k: torch.from_numpy(v[idx]) for k, v in self.conds.items()}
            if self.context is not None:
                cond[CONTEXT_KEY] = torch.from_numpy(self.context[idx].astype(np.float32))
            yield {"x1": torch.from_numpy(self.target[idx].astype(np.float32)), "cond": cond}

    def loss(self, model: torch.nn.Module, batch: dict, device: torch.device) -> tuple[torch.Tensor, dict]:
        x1 = batch["x1"].to(device, non_blocking=True)
        cond = {k: v.to(device, non_blocking=True) for k, v in batch["cond"].items()}
        cond = drop_conditions(cond, self.drop_prob, all_prob=self.drop_all_prob)  # global RNG: resume-exact
        t = flow.sample_time(x1.shape[0], self.time_sampler, device=device)
        eps = torch.randn_like(x1)
        return flow.flow_loss(model, x1, cond, t, eps), {}

    def model_config(self) -> dict:
        return self.model_cfg.to_dict()

    def data_key(self) -> str:
        """Digest of the training latents, their conditions and vocabulary (resume only on the same data)."""
        h = hashlib.blake2b(digest_size=16)
        for name, arr in [("target", self.target), ("context", self.context), *sorted(self.conds.items())]:
            h.update(name.encode())
            if arr is not None:
                h.update(np.ascontiguousarray(arr).tobytes())
        h.update(json.dumps(self.vocab.to_dict(), sort_keys=True, default=str).encode())
        return h.hexdigest()

    def metadata(self) -> dict:
        return {"kind": self.kind, "model": self.model_cfg.to_dict(), "vocabulary": self.vocab.to_dict(),
                "latent_norm": self.norm.to_dict(), "drop_prob": self.drop_prob,
                "drop_all_prob": self.drop_all_prob,
                "time_sampler": self.time_sampler, "n_train": int(len(self.target)),
                "n_train_subjects": int(self.n_subjects), "flow": "x_t=(1-t)*x1+t*eps; v=eps-x1; data at t=0"}

    def export(self, model: torch.nn.Module, out_dir: str | Path) -> None:
        write_generator_json(self.metadata(), out_dir)


def write_generator_json(meta: dict, out_dir: str | Path) -> Path:
    path = Path(out_dir) / GENERATOR_JSON
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2))
    tmp.replace(path)
    return path


def _drop_probs(value, names: list[str]) -> dict[str, float]:
    if isinstance(value, int | float):
        return {k: float(value) for k in names}
    unknown = set(value) - set(names)
    if unknown:
        raise ValueError(f"drop_prob names unknown condition(s) {sorted(unknown)}; conditions are {names}")
    return {k: float(value.get(k, 0.1)) for k in names}


def build_task(kind: str, rows: pd.DataFrame, target: np.ndarray, extra: dict, batch_size: int,
               context: np.ndarray | None = None) -> GeneratorTask:
    """Vocabulary + normalisation from these (training) rows, model config from ``extra``."""
    names = list(extra.get("conditions", DEFAULT_CONDITIONS[kind]))
    bad = set(names) - set(COLUMNS)
    if bad:
        raise ValueError(f"train.{kind}.conditions: unknown condition(s) {sorted(bad)}; choose from {sorted(COLUMNS)}")
    categorical = {k: COLUMNS[k] for k in names if k in CATEGORICAL_COLUMNS}
    continuous = [k for k in names if k not in CATEGORICAL_COLUMNS]
    if kind == "dit_long" and "years" not in continuous:
        continuous.append("years")  # the forecast horizon is never optional
    vocab = build_vocabulary(rows, categorical, continuous)
    conds = vocab.encode_frame(rows, COLUMNS)
    # statistics of the generated latent; the baseline (context) shares the same tokenizer space
    norm = LatentNorm.fit(target if context is None else np.concatenate([target, context]))
    grid = tuple(extra.get("grid", GRID))
    if int(np.prod(grid)) != target.shape[1]:
        raise ValueError(f"train.{kind}.grid {list(grid)} has {int(np.prod(grid))} tokens but the latents have "
                         f"{target.shape[1]}")
    widths = {k: int(extra[k]) for k in ("hidden", "depth", "heads") if extra.get(k)}  # override the preset
    model_cfg = DiTConfig.from_preset(
        extra.get("preset", "tiny"), mlp_ratio=float(extra.get("mlp_ratio", 4.0)), grid=grid,
        patch=int(extra.get("patch", 1)),
        in_channels=target.shape[-1], context_channels=0 if context is None else context.shape[-1],
        categorical=vocab.model_categorical, continuous=vocab.model_continuous, **widths)
    n_subj = rows["subject_id"].nunique() if "subject_id" in rows else 0
    return GeneratorTask(kind, target, conds, vocab, norm, model_cfg, batch_size,
                         _drop_probs(extra.get("drop_prob", 0.1), [*vocab.categorical, *vocab.continuous]),
                         extra.get("time_sampler", "uniform"), context, n_subj,
                         float(extra.get("drop_all_prob", 0.0)))


def make_dit_task(config: dict, cfg) -> GeneratorTask:
    """Conditional DiT on the training split's latents (train CLI factory)."""
    ids, lat = load_latents(embeddings_paths(config))
    manifest = read_manifest(Layout(config.get("results", "results")).manifest)
    data = join_latents(manifest, ids, lat, list(cfg.extra.get("train_splits", ["train"])))
    return build_task("dit", data.rows, data.latents, cfg.extra, cfg.batch_size)


def make_dit_long_task(config: dict, cfg) -> GeneratorTask:
    """Longitudinal DiT on within-subject (baseline, follow-up) pairs of the training split."""
    lay = Layout(config.get("results", "results"))
    ids, lat = load_latents(embeddings_paths(config))
    manifest = read_manifest(lay.manifest)
    if not Path(lay.pairs).exists():
        raise FileNotFoundError(f"{lay.pairs}: pairs table missing; run the metadata stage first")
    pairs = join_pairs(pd.read_parquet(lay.pairs), manifest, ids, lat,
                       list(cfg.extra.get("train_splits", ["train"])), source=lay.pairs)
    return build_task("dit_long", pairs.rows, pairs.followup, cfg.extra, cfg.batch_size, context=pairs.baseline)
