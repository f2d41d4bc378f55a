"""`braing3n train NAME --configfile CFG --out DIR`: train one model with the shared engine.

Each model registers a task factory ``make(config: dict, cfg: TrainConfig) -> Task`` in TASKS
("module:function", imported lazily so one model's imports never break another's). The
TrainConfig comes from ``train.engine`` overlaid by ``train.<name>`` ('-' -> '_').
Multi-GPU: ``torchrun --nproc_per_node=4 -m braing3n train mae ...`` (or srun, see docs/tokenizer.md).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from braing3n.config import ConfigError, load_configs  # load_configs re-exported: others import it from here

TASKS: dict[str, str] = {
    "mae": "braing3n.tokenizer.tasks:make_mae_task",
    "decoder": "braing3n.tokenizer.tasks:make_decoder_task",
    "dit": "braing3n.generate.tasks:make_dit_task",
    "dit-long": "braing3n.generate.tasks:make_dit_long_task",
    "aekl": "braing3n.models.aekl:make_aekl_task",
}


def load_task_factory(name: str):
    module, func = TASKS[name].split(":")
    return getattr(importlib.import_module(module), func)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="braing3n train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", choices=sorted(TASKS), help="model to train")
    p.add_argument("--configfile", action="append", required=True, help="pipeline config (repeatable, later wins)")
    p.add_argument("--out", required=True, help="model folder (checkpoints, final*.safetensors, metrics.csv, tb/)")
    p.add_argument("--steps", type=int, default=None, help="override the configured number of steps")
    p.add_argument("--stop-at", type=int, default=None, help="stop (checkpointed) after this many total steps")
    args = p.parse_args(argv)
    from braing3n.train.engine import fit, train_config

    try:
        config = load_configs(args.configfile)
    except ConfigError as exc:
        print(f"braing3n train: {exc}", file=sys.stderr)
        return 2
    overrides = {"steps": args.steps} if args.steps else {}
    cfg = train_config(config, args.name.replace("-", "_"), **overrides)
    task = load_task_factory(args.name)(config, cfg)
    path = fit(task, cfg, args.out, stop_at=args.stop_at)
    print(f"braing3n train {args.name}: weights {path}")
    return 0
