"""`braing3n generate`: sample conditional brain volumes from the trained DiT.

    braing3n generate --configfile config/demo.yaml --disease AD --sex F --age 72 --modality T1 \\
        --n 8 --cfg 2.0 --seed 0 --out DIR
    braing3n generate --configfile config/demo.yaml --arm AD --out results/demo/samples/AD

Writes DIR/sample_000.nii.gz ... (SRI24 240x240x155, atlas affine, z-scored intensities),
DIR/latents.npy [n, 1200, 32], DIR/mosaic.png and DIR/samples.csv (+ provenance). The same
seed gives the same volumes. Model folders default to the config's ``generate`` section
(null = {results}/models/dit and {results}/models/decoder).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from braing3n.paths import model_dir_for

CONDITION_ARGS = ("disease", "sex", "modality", "site", "idh", "age")
DEFAULTS = {"n": 8, "cfg_scale": 2.0, "steps": 50, "solver": "heun", "batch_size": 16}


def resolve_dirs(config: dict | None, model_name: str) -> tuple[str | None, str | None]:
    """(model dir, tokenizer dir) of a sampling command (``braing3n.paths.model_dir_for``)."""
    if config is None:
        return None, None
    return model_dir_for(config, model_name), model_dir_for(config, "decoder")


def load_tokenizer(tokenizer_dir: str, device: str):
    from braing3n.tokenizer import load_tokenizer as _load

    return _load(tokenizer_dir, device)


# what an earlier run of `generate` / `forecast` leaves in its folder: only such a folder is replaced
OUTPUT_MARKERS = ("samples.csv", "forecast.csv")


def check_out_dir(out: Path, inputs: tuple[Path, ...] = ()) -> Path:
    """The resolved ``--out`` folder, refused (one line) when publishing there would delete
    something that is not an earlier output of these commands: a folder of the user's own files,
    or one that holds an input (a forecast's baseline scan)."""
    out = Path(out).resolve()
    for path in inputs:
        path = Path(path).resolve()
        if out == path or out in path.parents:
            raise ValueError(f"{out}: --out holds the input {path}, and would be replaced; choose another folder")
    if out.exists():
        if not out.is_dir():
            raise ValueError(f"{out}: --out exists and is not a folder")
        if any(out.iterdir()) and not any((out / m).exists() for m in OUTPUT_MARKERS):
            raise ValueError(f"{out}: --out exists and is not an earlier output of braing3n generate/forecast "
                             f"(no {' or '.join(OUTPUT_MARKERS)}); choose a new or empty folder")
    return out


def replace_dir(tmp: Path, out: Path) -> None:
    """Publish a finished output folder by renames: the old one (an earlier output, checked by
    check_out_dir) moves aside, the new one moves in, then the old one goes."""
    old = out.with_name(out.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if out.exists():
        out.replace(old)
    tmp.replace(out)
    if old.exists():
        shutil.rmtree(old)


@contextlib.contextmanager
def building(out: Path) -> Iterator[Path]:
    """An empty ``{out}.tmp`` to build the output in (a killed run's leftover is removed first):
    published as ``out`` when the block ends, removed when it raises - no partial output, and an
    earlier output stays."""
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, out)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="braing3n generate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configfile", action="append", help="pipeline config(s) for defaults (repeatable)")
    p.add_argument("--model-dir", help="trained DiT folder (generator.json + weights)")
    p.add_argument("--tokenizer-dir", help="tokenizer folder whose decoder turns latents into volumes")
    p.add_argument("--arm", help="take the conditions from generate.arms[ARM] in the config")
    p.add_argument("--disease", help="diagnosis, e.g. HC, AD, MCI, GBM (must occur in the training split)")
    p.add_argument("--sex", choices=["F", "M"])
    p.add_argument("--age", type=float, help="age in years")
    p.add_argument("--modality", choices=["T1", "T2", "FLAIR", "T1c"])
    p.add_argument("--site")
    p.add_argument("--idh", help="IDH1 status (mutant / wildtype)")
    p.add_argument("--n", type=int, help="number of samples (default: generate.n, 8)")
    p.add_argument("--cfg", type=float, dest="cfg_scale", help="guidance scale w (default: generate.cfg_scale, 2.0)")
    p.add_argument("--steps", type=int, help="ODE steps (default: generate.steps, 50)")
    p.add_argument("--solver", choices=["euler", "heun"], help="ODE solver (default: heun)")
    p.add_argument("--seed", type=int, help="sampling seed (default: the config seed, 0)")
    p.add_argument("--batch-size", type=int, help="latents per forward pass (default: 16)")
    p.add_argument("--device", default=None, help="auto, cpu or cuda (default: the config device, auto)")
    p.add_argument("--no-decode", action="store_true", help="write latents.npy only (no tokenizer needed)")
    p.add_argument("--out", required=True, help="output folder")
    return p


def load_optional_config(paths: list[str] | None) -> dict | None:
    if not paths:
        return None
    from braing3n.config import load_configs

    return load_configs(paths)


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    from braing3n.config import ConfigError

    try:
        config = load_optional_config(args.configfile)
    except ConfigError as exc:
        print(f"braing3n generate: {exc}", file=sys.stderr)
        return 2
    gen_cfg = {**DEFAULTS, **((config or {}).get("generate", {}))}
    model_dir, tok_dir = resolve_dirs(config, "dit")
    model_dir, tok_dir = args.model_dir or model_dir, args.tokenizer_dir or tok_dir
    if model_dir is None or (tok_dir is None and not args.no_decode):
        print("braing3n generate: give --configfile, or --model-dir and --tokenizer-dir", file=sys.stderr)
        return 2
    conditions: dict = {}
    if args.arm:
        arms = gen_cfg.get("arms", {})
        if args.arm not in arms:
            print(f"braing3n generate: arm {args.arm!r} not in generate.arms {sorted(arms)}", file=sys.stderr)
            return 2
        conditions.update(arms[args.arm])
    conditions.update({k: getattr(args, k) for k in CONDITION_ARGS if getattr(args, k) is not None})
    opts = {k: getattr(args, k) if getattr(args, k) is not None else gen_cfg[k] for k in DEFAULTS}
    seed = args.seed if args.seed is not None else int((config or {}).get("seed", 0))
    device = args.device or (config or {}).get("device", "auto")
    try:
        run(model_dir, tok_dir, conditions, seed=seed, out=args.out, device=device, decode=not args.no_decode,
            config=config, **opts)
    except (FileNotFoundError, ValueError) as exc:
        print(f"braing3n generate: {exc}", file=sys.stderr)
        return 1
    return 0


def run(model_dir: str, tokenizer_dir: str | None, conditions: dict, n: int, cfg_scale: float, steps: int,
        solver: str, seed: int, batch_size: int, out: str, device: str = "auto", decode: bool = True,
        config: dict | None = None) -> Path:
    """Sample, decode and write one condition arm into ``out`` (published atomically)."""
    from braing3n.generate.sampler import load_generator, sample_latents
    from braing3n.generate.volumes import decode_latents, save_mosaic, write_volumes
    from braing3n.provenance import provenance, write_table

    if n < 1 or batch_size < 1 or steps < 1:
        raise ValueError(f"n={n}, batch_size={batch_size}, steps={steps}: each must be at least 1")
    out_dir = check_out_dir(Path(out))  # before the slow part, and never deleting a user's folder
    gen = load_generator(model_dir, device)
    tok = load_tokenizer(tokenizer_dir, device) if decode else None  # fail before the slow part
    latents = sample_latents(gen, conditions, n=n, cfg_scale=cfg_scale, steps=steps, solver=solver, seed=seed,
                             batch_size=batch_size)
    with building(out_dir) as tmp:
        np.save(tmp / "latents.npy", latents.numpy())
        files = [""] * n
        if tok is not None:
            vols = decode_latents(tok, latents, batch_size=min(batch_size, 4))
            files = [p.name for p in write_volumes(vols, tmp)]
            label = ", ".join(f"{k}={v}" for k, v in conditions.items()) or "unconditional"
            save_mosaic(list(vols[:8]), tmp / "mosaic.png", titles=[f"{label}  #{k}" for k in range(min(n, 8))])
        cond_cols = {f"cond_{k}": conditions.get(k) for k in CONDITION_ARGS}
        table = pd.DataFrame({"index": range(n), "file": files, **{k: [v] * n for k, v in cond_cols.items()},
                              "seed": seed, "cfg_scale": cfg_scale, "steps": steps, "solver": solver})
        write_table(table, tmp / "samples.csv", provenance(config, seed=seed, samples=n))
    print(f"braing3n generate: {n} sample(s) -> {out_dir}")
    return out_dir
