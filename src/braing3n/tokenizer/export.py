"""`braing3n export --configfile CFG --cohort NAME --out {results}/embeddings/{cohort}.npz`.

Encodes every usable store scan of the cohort with the frozen tokenizer. The .npz holds
``scan_id`` (str, N), ``latent`` (float32, N x 1200 x 32: the DiT's input), ``cls`` and ``mean``
(float32, N x D: CLS token and mean of the 1,200 patch tokens, for the linear probes).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from braing3n.data.loader import VolumeDataset, eval_batches, zscore
from braing3n.data.store import read_index
from braing3n.models.mae import pool_token_grid


def export_embeddings(tok, index, out: str | Path, batch_size: int = 2, num_workers: int = 0) -> dict[str, np.ndarray]:
    """Encode the scans of ``index`` (a store index) and write the .npz atomically; returns the arrays."""
    grid_tokens, latent_dim, width = tok.mae_cfg.n_tokens, tok.dec_cfg.latent_dim, tok.mae_cfg.width
    arrays = {"scan_id": np.array([], dtype=str), "latent": np.zeros((0, grid_tokens, latent_dim), np.float32),
              "cls": np.zeros((0, width), np.float32), "mean": np.zeros((0, width), np.float32),
              "grid": pool_token_grid(torch.zeros(0, grid_tokens, width), tok.mae_cfg.grid).numpy().astype(np.float16)}
    if len(index):
        ds = VolumeDataset(index)
        parts: dict[str, list[np.ndarray]] = {"latent": [], "cls": [], "mean": [], "grid": []}
        for _, batch in eval_batches(ds, batch_size, num_workers):
            enc = tok.encode(zscore(batch.to(tok.device)))
            for k in parts:
                # the pooled grid is the large one (D x 150 per scan): half precision on disk
                parts[k].append(enc[k].cpu().numpy().astype(np.float16 if k == "grid" else np.float32))
        arrays = {"scan_id": np.array(ds.scan_ids, dtype=str), **{k: np.concatenate(v) for k, v in parts.items()}}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(".tmp." + out.name)
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    tmp.replace(out)
    return arrays


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="braing3n export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configfile", action="append", required=True)
    p.add_argument("--cohort", required=True)
    p.add_argument("--out", required=True, help="{results}/embeddings/{cohort}.npz")
    p.add_argument("--model-dir", default=None, help="tokenizer folder (default {results}/models/decoder)")
    args = p.parse_args(argv)
    from braing3n.config import load_configs
    from braing3n.paths import Layout, model_dir_for
    from braing3n.tokenizer.api import load_tokenizer

    config = load_configs(args.configfile)
    layout = Layout(config["results"])
    dec = config["train"]["decoder"]
    try:
        index = read_index([layout.store_index(args.cohort)])
        model_dir = args.model_dir or model_dir_for(config, "decoder")
        tok = load_tokenizer(model_dir, config.get("device", "auto"))
    except FileNotFoundError as exc:
        print(f"braing3n export: {exc}", file=sys.stderr)
        return 1
    workers = config["train"]["engine"]["num_workers"] if tok.device.type == "cuda" else 0
    arrays = export_embeddings(tok, index, args.out, dec["eval_batch_size"], workers)
    print(f"export {args.cohort}: {len(arrays['scan_id'])} scans, latent {arrays['latent'].shape[1:]} -> {args.out}")
    return 0
