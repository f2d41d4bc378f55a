"""Head mask + N4 bias-field correction (ANTsPy).

ANTs N4 is run inside a head mask and on a fixed physical working grid (~8 mm, block means of
the scan: the factor per axis comes from the voxel size, so a 1 mm, a 2 mm and a 0.9x0.9x5.5 mm
head all fit on about the same grid). Unmasked N4 at library defaults spends most of its time
fitting the bias to air (121 s vs 19 s per head, REFERENCE.md); N4's own `shrink_factor` is one
integer for every axis and rebuilds the B-spline field at every full-resolution voxel, which
made N4 cost as much as HD-BET on a 1 mm head. The bias field is smooth (180 mm control-point
distance), so its log is interpolated linearly back to the scan's grid (bias error against the
full-resolution fit: `braing3n bench preprocess`, docs/preprocess.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import ants
import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

from braing3n.preprocess.faults import stage
from braing3n.preprocess.resample import block_factors, expand_linear, shrink


@dataclass(frozen=True)
class N4Params:
    working_mm: float = 8.0
    iterations: tuple[int, ...] = (50, 50, 30)
    tolerance: float = 1e-6
    spline_distance_mm: float = 180.0


def largest_component(mask: np.ndarray) -> np.ndarray:
    labels, n = ndimage.label(mask)
    if n <= 1:
        return mask.astype(bool)
    sizes = ndimage.sum(mask, labels, index=np.arange(1, n + 1))
    return labels == (1 + int(np.argmax(sizes)))


@stage("head mask")
def head_mask(img: ants.ANTsImage) -> ants.ANTsImage:
    """Otsu foreground, closed, largest component, holes filled (air and noise excluded).

    Empty when nothing stands out of the background (a near-constant image): the caller fails
    the scan as "no head found" instead of Otsu raising on an empty or one-valued histogram."""
    data = img.numpy()
    above = data[data > np.percentile(data, 1)]
    if above.size < 2 or float(above.min()) == float(above.max()):
        return img.new_image_like(np.zeros(data.shape, np.float32))
    fg = data > threshold_otsu(above)
    fg = ndimage.binary_closing(fg, structure=np.ones((3, 3, 3)), iterations=2)
    fg = largest_component(fg)
    fg = ndimage.binary_fill_holes(fg)
    # fill holes slice by slice too: the skull is often open at the bottom of the field of view
    for axis in range(3):
        fg = np.stack([ndimage.binary_fill_holes(s) for s in np.moveaxis(fg, axis, 0)], axis=0)
        fg = np.moveaxis(fg, 0, axis)
    return img.new_image_like(fg.astype(np.float32))


def despike(img: ants.ANTsImage) -> ants.ANTsImage:
    """Isolated extreme voxels (hot or dead pixels) set to the median of their 3x3x3 neighbours.

    The reader clips them to a fence one 0.1-99.9 percentile range beyond those percentiles, but a
    few voxels at twice the brightest tissue still stretch every intensity histogram downstream
    (Otsu's head threshold, the Mattes bins of the registration), so the same head with and without
    them registered differently (atlas NCC 0.973 between the two on IXI174). A spike lies beyond
    half that range outside the percentiles and half a range away from its neighbourhood's median."""
    data = img.numpy()
    lo, hi = np.percentile(data, [0.1, 99.9])
    r = float(hi - lo)
    cand = np.argwhere((data < lo - r / 2) | (data > hi + r / 2))
    if r <= 0 or cand.size == 0 or len(cand) > 1e-3 * data.size:  # many such voxels: anatomy, not spikes
        return img
    out = data.copy()
    pad = np.pad(data, 1, mode="edge")
    offsets = np.stack(np.meshgrid(*[np.arange(3)] * 3, indexing="ij"), -1).reshape(-1, 3)
    neigh = pad[tuple((cand[:, None, :] + offsets[None]).transpose(2, 0, 1))]  # (n, 27)
    med = np.median(neigh, axis=1)
    spike = np.abs(data[tuple(cand.T)] - med) > r / 2
    out[tuple(cand[spike].T)] = med[spike]
    return img.new_image_like(out)


def positive(img: ants.ANTsImage, mask: ants.ANTsImage) -> ants.ANTsImage:
    """N4 fits log intensities: a copy floored at 1% of the head's median (noise at or below 0 has
    no log). A floor, not a shift: `img - min + 1` compressed the tissue contrast N4 fits and left
    the offset in the output (a -32768 background came out +32769)."""
    data = img.numpy()
    inside = data[mask.numpy() > 0]
    floor = 0.01 * float(np.median(inside[inside > 0])) if (inside > 0).any() else 1.0
    return img.new_image_like(np.maximum(data, floor).astype(np.float32))


def working_grid(img: ants.ANTsImage, params: N4Params = N4Params()) -> tuple[int, ...]:
    """Voxels per working-grid block along each axis (~``params.working_mm``)."""
    return block_factors(img.spacing, params.working_mm)


@stage("n4")
def n4(img: ants.ANTsImage, mask: ants.ANTsImage, params: N4Params = N4Params()) -> ants.ANTsImage:
    """Bias-corrected image; voxels outside the mask are corrected with the extrapolated field."""
    return img.new_image_like((img.numpy() / bias_field(img, mask, params)).astype(np.float32))


def bias_field(img: ants.ANTsImage, mask: ants.ANTsImage, params: N4Params = N4Params(),
               factors: tuple[int, ...] | None = None) -> np.ndarray:
    """N4's multiplicative field on ``img``'s grid, fitted on the working grid (``factors`` voxels
    per block; all 1 = the full-resolution fit the benchmark compares with)."""
    f = working_grid(img, params) if factors is None else tuple(factors)
    floored = positive(img, mask)
    small, small_mask = shrink(floored, f), shrink(mask, f)
    small_mask = small_mask.new_image_like((small_mask.numpy() >= 0.5).astype(np.float32))
    field = ants.n4_bias_field_correction(
        small, mask=small_mask, shrink_factor=1,
        convergence={"iters": list(params.iterations), "tol": params.tolerance},
        spline_param=params.spline_distance_mm, rescale_intensities=False, return_bias_field=True).numpy()
    # the field divides the image itself: no floor or offset of the floored copy reaches the output
    if all(k == 1 for k in f):
        return field.astype(np.float32)
    return np.exp(expand_linear(np.log(np.maximum(field, 1e-6)), f, img.shape))
