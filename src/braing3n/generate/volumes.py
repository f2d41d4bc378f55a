"""Latents -> atlas-space volumes through the tokenizer decoder; NIfTI and PNG mosaics.

Decoded volumes are in the model's intensity space (per-volume z-scored, as the tokenizer was
trained) and placed back into the SRI24 240x240x155 grid with the atlas affine.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from braing3n.data.geometry import uncrop_to_atlas, write_atlas_nifti


@torch.no_grad()
def decode_latents(tokenizer, latents: torch.Tensor, batch_size: int = 4) -> np.ndarray:
    """[n, 1200, 32] latents -> [n, 240, 240, 155] float32 atlas-grid volumes."""
    out = []
    device = getattr(tokenizer, "device", torch.device("cpu"))
    for s in range(0, latents.shape[0], batch_size):
        vol = tokenizer.decode(latents[s:s + batch_size].to(device))  # [b, 1, 160, 192, 160]
        out.append(uncrop_to_atlas(vol[:, 0].float().cpu().numpy()))
    return np.concatenate(out).astype(np.float32)


def mid_slices(vol: np.ndarray) -> list[np.ndarray]:
    """Axial, coronal and sagittal mid-slices of an LPS atlas-grid volume, oriented for display
    (anterior/superior up, patient left on the image right as in radiology)."""
    i, j, k = (s // 2 for s in vol.shape)
    axial = np.rot90(vol[:, :, k], 1)  # rows: posterior -> anterior after rotation
    coronal = np.rot90(vol[:, j, :], 1)
    sagittal = np.rot90(vol[i, :, :], 1)
    return [np.flipud(axial), coronal, np.fliplr(sagittal)]


def save_mosaic(vols: list[np.ndarray], path: str | os.PathLike, titles: list[str] | None = None,
                cmaps: list[str] | None = None, symmetric: list[bool] | None = None) -> Path:
    """One row per volume, three orthogonal mid-slices per row, written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(vols)
    fig, axes = plt.subplots(n, 3, figsize=(7.5, 2.6 * n), squeeze=False)
    for r, vol in enumerate(vols):
        cmap = (cmaps or ["gray"] * n)[r]
        if symmetric and symmetric[r]:
            lim = float(np.percentile(np.abs(vol), 99.5)) or 1.0
            lo, hi = -lim, lim
        else:
            lo, hi = (float(x) for x in np.percentile(vol, [0.5, 99.5]))
        for c, sl in enumerate(mid_slices(vol)):
            ax = axes[r, c]
            ax.imshow(sl, cmap=cmap, vmin=lo, vmax=hi if hi > lo else lo + 1, interpolation="nearest")
            ax.set_axis_off()
        if titles:
            axes[r, 0].set_title(titles[r], fontsize=8, loc="left")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".tmp." + path.name)
    fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    tmp.replace(path)
    return path


def write_volumes(vols: np.ndarray, out_dir: str | os.PathLike, stem: str = "sample") -> list[Path]:
    """Atlas-space NIfTI per volume: {out_dir}/{stem}_{k:03d}.nii.gz."""
    return [write_atlas_nifti(v, Path(out_dir) / f"{stem}_{k:03d}.nii.gz") for k, v in enumerate(vols)]
