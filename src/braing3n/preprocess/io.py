"""Robust NIfTI input: read, validate (one-line errors naming the file), clean, reorient, hand to ANTs.

Cleaning makes a valid head stored with an odd background or a few extreme voxels look like the
same head with a zero background: a constant background value held by the field of view's border
(int16 -32768, a large positive fill) is set to 0 where it is connected to the border, and values
beyond a wide fence around the 0.1-99.9 percentiles are clipped (hot or dead voxels).

Reorientation is a pure axis permutation/flip to the closest canonical (RAS) voxel order with
the affine updated to match, so every voxel keeps its world position (an oblique scan stays
oblique). ANTs works in ITK's LPS world; nibabel in RAS: the conversion flips x and y.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import ants
import nibabel as nib
import numpy as np
from scipy import ndimage

from braing3n.preprocess.faults import stage

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
MIN_VOXEL_MM, MAX_VOXEL_MM = 0.1, 10.0
MIN_EXTENT_MM = 40.0  # a head is > 10 cm across; a smaller field of view is not a brain scan
BORDER_BACKGROUND = 0.25  # a value held by >= this fraction of the border voxels is a fill value


class ScanError(ValueError):
    """Bad input data: the scan is recorded as failed and the cohort goes on."""


def load_nifti(path: str | os.PathLike) -> nib.Nifti1Image:
    """Read and validate a 3D scan; return a float32 image in closest-canonical (RAS) voxel order."""
    path = Path(path)
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except FileNotFoundError as exc:
        raise ScanError(f"{path}: file not found") from exc
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
        raise ScanError(f"{path}: unreadable or truncated file ({type(exc).__name__}: {exc})") from exc
    except (nib.filebasedimages.ImageFileError, ValueError) as exc:
        raise ScanError(f"{path}: not a readable NIfTI image ({exc})") from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim == 4:
        raise ScanError(f"{path}: 4D image with {data.shape[3]} volumes; expected one 3D volume")
    if data.ndim != 3 or min(data.shape) < 2:
        raise ScanError(f"{path}: {data.ndim}D image of shape {data.shape}; expected a 3D volume, 2+ voxels thick")
    if data.dtype.fields is not None or not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
        raise ScanError(f"{path}: voxel type {data.dtype} is not a real scalar (an RGB or complex image?)")
    data = data.astype(np.float32)
    if not np.isfinite(data).all():
        raise ScanError(f"{path}: {int((~np.isfinite(data)).sum())} NaN/Inf voxels")
    if float(data.max()) == float(data.min()):
        raise ScanError(f"{path}: constant image (every voxel is {float(data.min()):g})")
    zooms = np.sqrt((img.affine[:3, :3] ** 2).sum(0))
    if not np.isfinite(img.affine).all() or np.any(zooms < MIN_VOXEL_MM) or np.any(zooms > MAX_VOXEL_MM):
        raise ScanError(f"{path}: absurd voxel size {np.round(zooms, 4).tolist()} mm "
                        f"(allowed {MIN_VOXEL_MM}-{MAX_VOXEL_MM} mm)")
    if abs(np.linalg.det(img.affine[:3, :3])) < 1e-6:
        raise ScanError(f"{path}: singular orientation matrix in the header")
    extent = zooms * np.array(data.shape)
    if extent.min() < MIN_EXTENT_MM:  # every axis: a few thick slices are no head either
        axis = int(np.argmin(extent))
        raise ScanError(f"{path}: field of view {np.round(extent, 1).tolist()} mm is too small for a head "
                        f"(axis {axis}: {data.shape[axis]} voxels of {zooms[axis]:.3g} mm; "
                        f"a head needs >= {MIN_EXTENT_MM:g} mm along every axis)")
    data = clean_intensities(data)
    if float(data.max()) == float(data.min()):
        raise ScanError(f"{path}: constant image once its background and outlier voxels are set aside")
    out = nib.as_closest_canonical(nib.Nifti1Image(data, img.affine))
    # Headers store the affine in float32: the same geometry written in two orientations differs
    # by ~1e-6 mm, and ANTs' seeded random metric sampling then takes another path. Snapping to
    # 0.1 um (translation) and 1e-6 (rotation/zoom) makes equal geometry give equal output.
    affine = out.affine.copy()
    affine[:3, :3] = np.round(affine[:3, :3], 6)
    affine[:3, 3] = np.round(affine[:3, 3], 4)
    return nib.Nifti1Image(np.asanyarray(out.dataobj), affine)


def border_background(data: np.ndarray) -> float | None:
    """The value held by >= BORDER_BACKGROUND of the field of view's border voxels, if any."""
    border = np.concatenate([np.take(data, i, axis=a).ravel() for a in range(3) for i in (0, -1)])
    values, counts = np.unique(border, return_counts=True)
    k = int(np.argmax(counts))
    return float(values[k]) if counts[k] >= BORDER_BACKGROUND * border.size else None


def clean_intensities(data: np.ndarray) -> np.ndarray:
    """Fill-value background -> 0, extreme voxels clipped (see the module docstring); float32."""
    data = np.array(data, dtype=np.float32)
    bg = border_background(data)
    if bg is not None and bg != 0.0:
        fill = data == bg
        rest = data[~fill]
        if rest.size and (bg < rest.min() or bg > rest.max()):
            data[fill] = 0.0  # beyond every other value (-32768, 65535): no voxel of it is tissue
        else:  # inside the tissue range: only where it is connected to the border
            labels, _ = ndimage.label(fill)
            edge = np.unique(np.concatenate([np.take(labels, i, axis=a).ravel() for a in range(3) for i in (0, -1)]))
            data[np.isin(labels, edge[edge > 0])] = 0.0
    lo, hi = np.percentile(data, [0.1, 99.9])
    if hi > lo:  # a fence one full 0.1-99.9 range wide on each side: real tissue never reaches it
        np.clip(data, lo - (hi - lo), hi + (hi - lo), out=data)
    return data


def to_ants(img: nib.Nifti1Image) -> ants.ANTsImage:
    """nibabel (RAS world) -> ANTs image (LPS world) with identical voxel positions."""
    aff = RAS_TO_LPS @ img.affine
    spacing = np.sqrt((aff[:3, :3] ** 2).sum(0))
    direction = aff[:3, :3] / spacing
    return ants.from_numpy(np.asarray(img.dataobj, dtype=np.float32), origin=aff[:3, 3].tolist(),
                           spacing=spacing.tolist(), direction=direction)


def ants_affine(img: ants.ANTsImage) -> np.ndarray:
    """The RAS voxel->world affine of an ANTs image (nibabel convention)."""
    aff = np.eye(4)
    aff[:3, :3] = np.asarray(img.direction) * np.asarray(img.spacing)[None, :]
    aff[:3, 3] = img.origin
    return RAS_TO_LPS @ aff


@stage("write")
def save_ants(img: ants.ANTsImage, path: str | os.PathLike, dtype=np.float32) -> None:
    """Write an ANTs image as NIfTI (through nibabel so qform/sform codes are set)."""
    aff = ants_affine(img)
    out = nib.Nifti1Image(img.numpy().astype(dtype), aff)
    out.set_qform(aff, code=1)
    out.set_sform(aff, code=1)
    out.header.set_xyzt_units("mm")
    nib.save(out, str(path))


@stage("read")
def read_scan(path: str | os.PathLike) -> ants.ANTsImage:
    """Validated scan as an ANTs image in canonical voxel order."""
    return to_ants(load_nifti(path))
