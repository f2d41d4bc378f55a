"""Head mask + N4 bias-field correction (ANTsPy).

ANTs N4 is run inside a head mask and on a shrunk grid: unmasked N4 at library defaults
spends most of its time fitting the bias to air (121 s vs 19 s per head, REFERENCE.md), and
the bias field is smooth, so fitting it on a 4x shrunk grid loses nothing measurable.
"""

from __future__ import annotations

from dataclasses import dataclass

import ants
import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu


@dataclass(frozen=True)
class N4Params:
    shrink_factor: int = 4
    iterations: tuple[int, ...] = (50, 50, 30)
    tolerance: float = 1e-6
    spline_distance_mm: float = 180.0


def largest_component(mask: np.ndarray) -> np.ndarray:
    labels, n = ndimage.label(mask)
    if n <= 1:
        return mask.astype(bool)
    sizes = ndimage.sum(mask, labels, index=np.arange(1, n + 1))
    return labels == (1 + int(np.argmax(sizes)))


def head_mask(img: ants.ANTsImage) -> ants.ANTsImage:
    """Otsu foreground, closed, largest component, holes filled (air and noise excluded)."""
    data = img.numpy()
    fg = data > threshold_otsu(data[data > np.percentile(data, 1)])
    fg = ndimage.binary_closing(fg, structure=np.ones((3, 3, 3)), iterations=2)
    fg = largest_component(fg)
    fg = ndimage.binary_fill_holes(fg)
    # fill holes slice by slice too: the skull is often open at the bottom of the field of view
    for axis in range(3):
        fg = np.stack([ndimage.binary_fill_holes(s) for s in np.moveaxis(fg, axis, 0)], axis=0)
        fg = np.moveaxis(fg, 0, axis)
    return img.new_image_like(fg.astype(np.float32))


def n4(img: ants.ANTsImage, mask: ants.ANTsImage, params: N4Params = N4Params()) -> ants.ANTsImage:
    """Bias-corrected image; voxels outside the mask are corrected with the extrapolated field."""
    # N4 works on log intensities: keep them strictly positive
    shifted = img - float(img.min()) + 1.0 if float(img.min()) <= 0 else img
    out = ants.n4_bias_field_correction(
        shifted, mask=mask, shrink_factor=params.shrink_factor,
        convergence={"iters": list(params.iterations), "tol": params.tolerance},
        spline_param=params.spline_distance_mm, rescale_intensities=False)
    return out
