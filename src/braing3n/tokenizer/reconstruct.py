"""`braing3n reconstruct --configfile CFG --out {results}/tables/reconstruction.csv`.

Scores the tokenizer's reconstruction (encode -> 1200x32 latent -> decode) on held-out scans
(manifest split ``train.decoder.eval_split``, at most ``eval_max_scans``, sorted by scan_id):
L1 over the volume and over the brain, PSNR and 3D SSIM (skimage), all in z-score units with
``data_range`` = the input's max - min. A summary (mean, std per metric) goes to
``reconstruction_summary.csv``. The first ``eval_nifti`` scans are written as atlas-space NIfTI
(``{scan_id}_input.nii.gz``, ``{scan_id}_recon.nii.gz``) under ``{results}/reconstructions/``:
the reconstruction is mapped back to the input's intensities (brain mean/std) inside the input's
brain (nonzero) voxels, so it overlays the input and the preprocessed scan in any viewer.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from skimage.metrics import structural_similarity

from braing3n.data.geometry import write_atlas_nifti
from braing3n.data.loader import VolumeDataset, eval_batches, select_split, zscore
from braing3n.data.store import read_index


def volume_metrics(target: np.ndarray, recon: np.ndarray) -> dict[str, float]:
    """L1 (all voxels, brain voxels), PSNR and SSIM of one z-scored volume."""
    target, recon = target.astype(np.float32), recon.astype(np.float32)
    brain = target != 0
    data_range = float(target.max() - target.min())
    mse = float(np.mean((recon - target) ** 2))
    return {"l1": float(np.mean(np.abs(recon - target))),
            "l1_brain": float(np.mean(np.abs(recon - target)[brain])) if brain.any() else float("nan"),
            "psnr": float(10 * np.log10(data_range**2 / max(mse, 1e-12))),
            "ssim": float(structural_similarity(target, recon, data_range=data_range))}


def reconstruct(tok, index: pd.DataFrame, nifti_dir: Path | None, n_nifti: int, batch_size: int = 1) -> pd.DataFrame:
    ds = VolumeDataset(index)
    rows = []
    for idx, batch in eval_batches(ds, batch_size):
        vols = zscore(batch.to(tok.device))
        recon = tok.decode(tok.encode(vols)["latent"]).cpu().numpy()[:, 0]
        target = vols.cpu().numpy()[:, 0]
        for j, i in enumerate(idx):
            row = index.iloc[i]
            rows.append({"scan_id": row.scan_id, "cohort": row.cohort, **volume_metrics(target[j], recon[j])})
            if nifti_dir is not None and i < n_nifti:
                write_pair(batch[j, 0].float().numpy() / float(row.get("scale", 1.0)), recon[j], nifti_dir, row.scan_id)
    return pd.DataFrame(rows)


def write_pair(raw: np.ndarray, recon_z: np.ndarray, out_dir: Path, scan_id: str) -> tuple[Path, Path]:
    """Input (store intensities) and reconstruction (back in the input's intensity units) as atlas NIfTI."""
    brain = raw > 0
    mean, std = float(raw[brain].mean()), float(raw[brain].std())
    recon = np.where(brain, recon_z * std + mean, 0.0).clip(0, None)
    return (write_atlas_nifti(raw, Path(out_dir) / f"{scan_id}_input.nii.gz"),
            write_atlas_nifti(recon, Path(out_dir) / f"{scan_id}_recon.nii.gz"))


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="braing3n reconstruct", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configfile", action="append", required=True)
    p.add_argument("--out", required=True, help="{results}/tables/reconstruction.csv")
    p.add_argument("--model-dir", default=None, help="tokenizer folder (default {results}/models/decoder)")
    p.add_argument("--nifti-dir", default=None, help="default {results}/reconstructions")
    args = p.parse_args(argv)
    from braing3n.config import load_configs
    from braing3n.paths import Layout
    from braing3n.provenance import provenance, write_table
    from braing3n.tokenizer.api import load_tokenizer

    config = load_configs(args.configfile)
    layout = Layout(config["results"])
    dec = config["train"]["decoder"]
    cohorts = [c for c, s in config["cohorts"].items() if s.get("enabled", True)]
    try:
        if not Path(layout.manifest).exists():
            raise FileNotFoundError(f"{layout.manifest}: manifest not found; it defines the held-out split")
        index = select_split(read_index([layout.store_index(c) for c in cohorts]), layout.manifest,
                             [dec["eval_split"]])
        tok = load_tokenizer(args.model_dir or layout.model_dir("decoder"), config.get("device", "auto"))
    except (FileNotFoundError, ValueError) as exc:
        print(f"braing3n reconstruct: {exc}", file=sys.stderr)
        return 1
    index = index.sort_values("scan_id").head(dec["eval_max_scans"]).reset_index(drop=True)
    nifti_dir = Path(args.nifti_dir or layout.path("reconstructions"))
    table = reconstruct(tok, index, nifti_dir, dec["eval_nifti"], dec["eval_batch_size"])
    prov = provenance(config, seed=config.get("seed"), scans=len(table))
    write_table(table, args.out, prov)
    metrics = ["l1", "l1_brain", "psnr", "ssim"]
    summary = pd.DataFrame({"metric": metrics, "mean": [table[m].mean() for m in metrics],
                            "std": [table[m].std(ddof=0) for m in metrics], "n": len(table),
                            "split": dec["eval_split"]})
    write_table(summary, Path(args.out).with_name(Path(args.out).stem + "_summary.csv"), prov)
    print(summary.to_string(index=False))
    return 0
