"""The paper-size training tasks, built from a pipeline config exactly as `braing3n train NAME` builds
them, on a synthetic store (random float16 volumes) and synthetic latents.

Used by the paper-size tests (tests/test_paper_size.py), the memory table (`braing3n bench memory`)
and the GPU check (`braing3n bench gpu-check`): one definition of "the model a user trains".
MAE, decoder and AutoencoderKL go through the CLI's task factories (store index -> dataset); the
two DiTs through ``build_task``, which is what their factories call once the latents are read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from braing3n.config import load_configs
from braing3n.data.geometry import MODEL_SHAPE
from braing3n.paths import Layout
from braing3n.train.engine import Task, TrainConfig, train_config

REPO = Path(__file__).resolve().parents[3]
DEFAULT_CONFIG = REPO / "config" / "config.yaml"
COHORT = "synth"
N_LATENTS = 6  # synthetic latent rows: enough for a vocabulary with every condition known and unknown

# row label -> (train section, preset override or None); the presets users pick in config.yaml
MODELS: dict[str, tuple[str, str | None]] = {
    "mae-paper": ("mae", "paper"),
    "mae-vitb": ("mae", "vitb"),
    "decoder": ("decoder", None),
    "dit": ("dit", None),
    "dit-long": ("dit_long", None),
    "aekl": ("aekl", None),
}
TINY: dict[str, dict] = {  # the same tasks at their tiny presets (compile checks, dry passes)
    "mae": {"preset": "tiny"}, "decoder": {"preset": "tiny"}, "dit": {"preset": "tiny"},
    "dit_long": {"preset": "tiny"}, "aekl": {"channels": [4, 8, 8, 16, 16], "num_res_blocks": 1},
}


@dataclass
class PaperTask:
    label: str
    section: str
    train: TrainConfig
    task: Task


def base_config(results: str | Path, config_files: list[str | Path] | None = None) -> dict:
    """The user's config (default: config/config.yaml) with one synthetic cohort under ``results``."""
    config = load_configs([str(p) for p in (config_files or [DEFAULT_CONFIG])])
    config["results"] = str(results)
    config["cohorts"] = {COHORT: {"enabled": True}}
    return config


def write_store(results: str | Path, n: int = 1, seed: int = 0) -> Path:
    """``n`` random float16 volumes and the store index the tokenizer tasks read."""
    index = Path(Layout(str(results)).store_index(COHORT))
    index.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = []
    for i in range(n):
        name = f"vol{i:03d}.npy"
        vol = rng.random(MODEL_SHAPE, dtype=np.float32) * 1000
        vol[:8] = 0  # background, as the store holds it (z-score skips zeros)
        np.save(index.parent / name, vol.astype(np.float16))
        names.append(name)
    pd.DataFrame({"scan_id": [f"s{i}" for i in range(n)], "path": names, "status": "ok"}).to_parquet(index)
    return index


def synthetic_rows(n: int = N_LATENTS) -> pd.DataFrame:
    """Manifest-like rows with every condition column the DiTs read (one value of each missing)."""
    cyc = lambda vals: [vals[i % len(vals)] for i in range(n)]  # noqa: E731
    return pd.DataFrame({"scan_id": [f"s{i}" for i in range(n)], "subject_id": [f"p{i // 2}" for i in range(n)],
                         "split": "train", "diagnosis": cyc(["HC", "AD", "GBM", None]), "sex": cyc(["F", "M", None]),
                         "modality": cyc(["T1", "T2", "FLAIR", "T1c"]), "site": cyc(["a", "b", "c", None]),
                         "idh1": cyc(["wildtype", "mutant", None]), "age": cyc([71.0, 64.5, float("nan"), 30.0]),
                         "years": cyc([1.0, 2.5, 0.5])})


def make_task(label: str, config: dict, mae_dir: str | Path | None = None, tiny: bool = False,
              **overrides) -> PaperTask:
    """The task of row ``label`` (see MODELS) from ``config``; ``overrides`` are TrainConfig fields.

    The decoder trains on a MAE folder (``mae_dir``, as ``train.decoder.mae_dir``); without one its
    task only serves sizes (``braing3n.bench.memory``): its encoder weights are never loaded."""
    from braing3n.generate.tasks import build_task
    from braing3n.train.cli import load_task_factory

    section, preset = MODELS[label]
    config = {**config, "train": {k: dict(v) if isinstance(v, dict) else v for k, v in config["train"].items()}}
    sec = config["train"].setdefault(section, {})
    if preset:
        sec["preset"] = preset
    if tiny:
        sec.update(TINY[section])
    if section == "decoder" and mae_dir is not None:
        sec["mae_dir"] = str(mae_dir)
    cfg = train_config(config, section, **overrides)
    if section.startswith("dit"):
        rng = np.random.default_rng(0)
        rows = synthetic_rows()
        lat = lambda: rng.standard_normal((len(rows), 1200, 32)).astype(np.float32)  # noqa: E731
        if section == "dit":
            task = build_task("dit", rows, lat(), cfg.extra, cfg.batch_size)
        else:
            task = build_task("dit_long", rows, lat(), cfg.extra, cfg.batch_size, context=lat())
    elif section == "decoder" and mae_dir is None:  # sizes only (memory table): the encoder stays untrained
        from braing3n.models.decoder import decoder_config
        from braing3n.tokenizer.tasks import DecoderTask, mae_config_from, training_dataset

        dec = decoder_config(sec.get("preset", "paper"), latent_dim=sec.get("latent_dim"))
        mae = mae_config_from(config["train"].get("mae", {}))
        task = DecoderTask(mae, dec, Path("untrained-mae"), training_dataset(config, sec.get("splits")), cfg)
    else:
        task = load_task_factory(section.replace("_", "-"))(config, cfg)
    return PaperTask(label, section, cfg, task)
