"""Atlas grid (SRI24 240x240x155, 1 mm LPS) <-> model grid (160x192x160).

The model grid is a centre crop/pad of the atlas grid, per axis:
  i (L):   atlas 40..199  -> model 0..159   (crop 40 voxels each side)
  j (P):   atlas 24..215  -> model 0..191   (crop 24 voxels each side)
  k (S):   atlas 0..154   -> model 2..156   (pad 2 below, 3 above)
The SRI24 brain mask spans i 53..185, j 44..214, k 6..139, so no brain voxel is lost.
Model voxel (i, j, k) is atlas voxel (i + 40, j + 24, k - 2): ``MODEL_AFFINE`` places a
160x192x160 array in the same world space as the atlas.
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

from braing3n.atlas import AFFINE
from braing3n.atlas import SHAPE as ATLAS_SHAPE

MODEL_SHAPE = (160, 192, 160)
# (atlas_start, model_start, length) per axis: atlas[a0:a0+n] <-> model[m0:m0+n]
_SPANS = tuple((max(0, (a - m) // 2), max(0, (m - a) // 2), min(a, m)) for a, m in zip(ATLAS_SHAPE, MODEL_SHAPE,
                                                                                      strict=True))
OFFSET = tuple(a0 - m0 for a0, m0, _ in _SPANS)  # model index + OFFSET = atlas index -> (40, 24, -2)
MODEL_AFFINE = AFFINE @ np.array([[1, 0, 0, OFFSET[0]], [0, 1, 0, OFFSET[1]], [0, 0, 1, OFFSET[2]], [0, 0, 0, 1.0]])


def _slices(model_side: bool) -> tuple[slice, ...]:
    return tuple(slice(m0, m0 + n) if model_side else slice(a0, a0 + n) for a0, m0, n in _SPANS)


def crop_to_model(vol: np.ndarray) -> np.ndarray:
    """Atlas-grid volume (240, 240, 155) -> model grid (160, 192, 160); padding is 0."""
    vol = np.asarray(vol)
    if vol.shape[-3:] != ATLAS_SHAPE:
        raise ValueError(f"crop_to_model: expected an atlas-grid volume {ATLAS_SHAPE}, got {vol.shape}")
    out = np.zeros(vol.shape[:-3] + MODEL_SHAPE, dtype=vol.dtype)
    out[(..., *_slices(True))] = vol[(..., *_slices(False))]
    return out


def uncrop_to_atlas(vol160: np.ndarray) -> np.ndarray:
    """Model-grid volume (160, 192, 160) -> atlas grid (240, 240, 155); outside the crop is 0."""
    vol160 = np.asarray(vol160)
    if vol160.shape[-3:] != MODEL_SHAPE:
        raise ValueError(f"uncrop_to_atlas: expected a model-grid volume {MODEL_SHAPE}, got {vol160.shape}")
    out = np.zeros(vol160.shape[:-3] + ATLAS_SHAPE, dtype=vol160.dtype)
    out[(..., *_slices(False))] = vol160[(..., *_slices(True))]
    return out


def write_atlas_nifti(array: np.ndarray, path: str | os.PathLike, dtype=np.float32) -> Path:
    """Write an atlas-grid (240x240x155) or model-grid (160x192x160) array as atlas-space NIfTI.

    Model-grid arrays are uncropped first, so every written file has the atlas affine and
    overlays the preprocessed scans and the SRI24 template in any viewer.
    """
    array = np.asarray(array)
    if array.shape == MODEL_SHAPE:
        array = uncrop_to_atlas(array)
    if array.shape != ATLAS_SHAPE:
        raise ValueError(f"{path}: cannot write shape {array.shape} in atlas space (need {ATLAS_SHAPE} or "
                         f"{MODEL_SHAPE})")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(array.astype(dtype), AFFINE)
    img.set_qform(AFFINE, code=1)
    img.set_sform(AFFINE, code=1)
    img.header.set_xyzt_units("mm")
    tmp = path.with_name(".tmp." + path.name)
    nib.save(img, tmp)
    tmp.replace(path)
    return path
