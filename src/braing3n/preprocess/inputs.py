"""Which path a scan takes through the chain, decided per scan and written into its record.

Cohorts are distributed in different states: raw heads, skull-stripped brains (BraTS, UPenn-GBM,
UCSF-PDGM's brain-extracted volumes, many OpenNeuro derivatives), some already on the SRI24 grid.
HD-BET on a stripped brain returns part of it (Dice 0.46-0.64, issue #21) and registration then
fits that part, so two questions are answered first, from the cohort mapping when it declares
them (`scans.skull_stripped`, `scans.space`) and from the image otherwise:

- stripped?  Almost all of the non-zero region's edge is tissue against exact zero: a raw head's
  ends in air noise (or the field of view), with skin and skull inside it. Stripped: the brain
  mask is the cleaned non-zero support (largest component, holes filled), HD-BET is not run, N4
  runs inside that mask.
- on the SRI24 grid?  240x240x155 voxels of 1 mm once the axes are put in atlas order (any axis
  order and flips; the header origin is ignored: BraTS files shift it). Then the voxel array is
  permuted/flipped onto the atlas grid (no interpolation), an identity transform is written and
  registration is skipped. Anything else is registered brain-to-brain to the SRI24 brain.
"""

from __future__ import annotations

from dataclasses import dataclass

import ants
import numpy as np
from scipy import ndimage

from braing3n.preprocess.declared import Declared
from braing3n.preprocess.faults import stage
from braing3n.preprocess.io import ScanError
from braing3n.preprocess.n4 import N4Params, largest_component, n4

SRI24_SHAPE = (240, 240, 155)  # in atlas (LPS) axis order, 1 mm
# Stripped when at least this fraction of the non-zero region's boundary is tissue. Measured on
# ../shared/data: raw heads 0.04-0.09 (20 IXI), 0.30-0.35 (TCGA T1/T2/FLAIR), 0.47 (orientation
# head, letters burned in); stripped 0.99-1.00 (SRI24 spgr, TCGA T1 x its HD-BET brain mask).
STRIPPED_MIN_TISSUE_EDGE = 0.9
# ... and its non-zero region is brain-sized: a raw head stored with exact-zero air (defaced or
# masked by the scanner) also ends in tissue (scalp), but holds skull and scalp: adult heads
# measure > 2,500 mL (IXI: brain/head 0.29-0.41 of 1.1-1.5 L brains), brains (+CSF) < 2,000 mL.
STRIPPED_MAX_ML = 2200.0
TISSUE_LEVEL = 0.1
GRID_TOL_MM = 1e-3


@dataclass
class Route:
    """The path one scan took, and why; `record()` is what goes into the scan record."""

    skull_stripped: bool
    stripped_why: str
    sri24_grid: bool
    grid_why: str
    tissue_edge_fraction: float | None = None

    @property
    def name(self) -> str:
        return "+".join(["stripped" if self.skull_stripped else "raw", "sri24" if self.sri24_grid else "native"])

    def record(self) -> dict:
        return {"input_route": self.name, "input_route_why": f"{self.stripped_why}; {self.grid_why}",
                "tissue_edge_fraction": self.tissue_edge_fraction}


# ---------------------------------------------------------------------------------- SRI24 grid
def grid_axes(img: ants.ANTsImage) -> list[tuple[int, int]] | None:
    """For each atlas (LPS) axis, (array axis, +1/-1) when ``img``'s axes are world-aligned; else None."""
    direction = np.asarray(img.direction, float)
    axes = []
    for world in range(3):
        src = int(np.argmax(np.abs(direction[world])))
        if abs(abs(direction[world, src]) - 1.0) > 1e-4:
            return None
        axes.append((src, int(np.sign(direction[world, src]))))
    return axes if len({a for a, _ in axes}) == 3 else None


def sri24_grid(img: ants.ANTsImage) -> tuple[bool, str]:
    """(on the SRI24 grid?, the words saying why), from the geometry alone (origin ignored)."""
    axes = grid_axes(img)
    spacing = np.asarray(img.spacing, float)
    desc = f"grid {'x'.join(map(str, img.shape))} at {'x'.join(f'{s:.3g}' for s in spacing)} mm"
    if axes is None:
        return False, f"{desc}, oblique axes: not the SRI24 grid"
    shape = tuple(img.shape[a] for a, _ in axes)
    if shape == SRI24_SHAPE and np.all(np.abs(spacing - 1.0) <= GRID_TOL_MM):
        return True, f"{desc} is the SRI24 grid (240x240x155, 1 mm) up to axis order and flips"
    return False, f"{desc} is not the SRI24 grid (240x240x155, 1 mm)"


@stage("input")
def to_sri24(img: ants.ANTsImage, atlas_img: ants.ANTsImage) -> ants.ANTsImage:
    """``img`` on the atlas grid by permuting/flipping its voxel array: lossless, no interpolation."""
    axes = grid_axes(img)
    data = np.transpose(img.numpy(), [a for a, _ in axes])
    for world, (_, sign) in enumerate(axes):  # atlas direction is the identity (LPS)
        if sign < 0:
            data = np.flip(data, axis=world)
    return atlas_img.new_image_like(np.ascontiguousarray(data, dtype=np.float32))


def identity_transform(path: str) -> str:
    """An ANTs .mat that maps every point to itself (the transform of an input already in SRI24)."""
    tx = ants.create_ants_transform(transform_type="AffineTransform", dimension=3)
    ants.write_transform(tx, path)
    return path


# ---------------------------------------------------------------------------------- stripped input
def tissue_edge_fraction(img: ants.ANTsImage) -> float:
    """Fraction of the non-zero region's boundary voxels that hold tissue (> TISSUE_LEVEL x the 90th
    percentile of the positive voxels): a stripped brain ends in tissue against exact zero, a raw
    head's non-zero region in air noise or at the field of view. Measured on the image as read:
    N4's field extrapolated past its mask changes the rim (spgr 0.997 before N4, 0.71 after)."""
    data = img.numpy()
    support = data != 0
    edge = support & ~ndimage.binary_erosion(support)  # the field of view's faces count as edge
    if not edge.any() or not (data > 0).any() or one_valued(data[support]):  # a mask given as a scan
        return 0.0
    return float((data[edge] > TISSUE_LEVEL * float(np.percentile(data[data > 0], 90))).mean())


def one_valued(values: np.ndarray) -> bool:
    return values.size == 0 or float(values.min()) == float(values.max())


def support_mask(img: ants.ANTsImage) -> tuple[np.ndarray, dict]:
    """The cleaned non-zero support (largest component, holes filled) and the numbers behind it."""
    support = img.numpy() != 0
    labels, n = ndimage.label(support)
    largest = largest_component(support) if n > 1 else support
    share = float(largest.sum()) / max(int(support.sum()), 1)
    return ndimage.binary_fill_holes(largest), {"support_pieces": int(n), "support_largest_share": round(share, 4)}


@stage("n4")
def n4_in_mask(img: ants.ANTsImage, mask: np.ndarray, params: N4Params) -> ants.ANTsImage:
    """N4 fitted inside ``mask`` (a stripped input's brain) instead of the Otsu head mask."""
    return n4(img, img.new_image_like(mask.astype(np.float32)), params)


@stage("input")
def stripped_mask(raw: str, img: ants.ANTsImage) -> tuple[np.ndarray, dict]:
    """A skull-stripped scan's brain mask: the cleaned support, with the numbers behind it."""
    mask, numbers = support_mask(img)
    if not mask.any():
        raise ScanError(f"{raw}: input: skull-stripped scan has no non-zero voxels")
    if one_valued(img.numpy()[mask]):
        raise ScanError(f"{raw}: input: skull-stripped scan holds one value in its brain (a mask given as a scan?)")
    return mask, numbers


def decide_stripped(declared: Declared, img: ants.ANTsImage) -> tuple[bool, str, float | None]:
    """(stripped?, why, measured fraction); the image is measured only when nothing is declared."""
    if declared.skull_stripped is not None:
        word = "skull-stripped" if declared.skull_stripped else "a raw head"
        return declared.skull_stripped, f"declared {word} (cohort mapping or --skull-stripped)", None
    frac = tissue_edge_fraction(img)
    words = f"{100 * frac:.1f}% of the non-zero region's edge is tissue against zero background"
    support_ml = float((img.numpy() != 0).sum()) * float(np.prod(img.spacing)) / 1000.0
    if frac >= STRIPPED_MIN_TISSUE_EDGE and support_ml > STRIPPED_MAX_ML:
        return False, (f"raw head: {words}, but the non-zero region is {support_ml:.0f} mL "
                       f"(> {STRIPPED_MAX_ML:.0f} mL for a brain: a head with zero air)"), round(frac, 4)
    if frac >= STRIPPED_MIN_TISSUE_EDGE:
        return True, f"detected skull-stripped: {words} (>= {100 * STRIPPED_MIN_TISSUE_EDGE:.0f}%)", round(frac, 4)
    return False, f"raw head: {words} (< {100 * STRIPPED_MIN_TISSUE_EDGE:.0f}% for a stripped brain)", round(frac, 4)


def decide_grid(raw: str, declared: Declared, img: ants.ANTsImage) -> tuple[bool, str]:
    """(on the SRI24 grid?, why); a declared SRI24 input off that grid is bad data."""
    on_grid, why = sri24_grid(img)
    if declared.space == "native":
        return False, "declared native space: registered to SRI24"
    if declared.space == "SRI24":
        if not on_grid:
            raise ScanError(f"{raw}: input: declared space SRI24 but its {why}")
        return True, f"declared SRI24: {why}"
    return on_grid, ("detected SRI24: " + why) if on_grid else why
