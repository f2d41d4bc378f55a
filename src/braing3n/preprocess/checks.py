"""Plausibility checks each stage runs on its own output; the first implausible one names itself.

A mask covering half a brain used to surface as a registration failure (issue #21): now the
mask is checked where it is made and the reason reads
``"<file>: hdbet: brain mask covers 31% of the head (expected 35-80%)"``, one line naming the
file, the stage and the number. The numbers behind every check go into the scan record's `qc`
(and so into the QC table) whether they pass or not.

Ranges were measured on the real heads in ../shared/data (HD-BET fast, then the T1 affine):
brain/head volume 0.29-0.41 (8 IXI heads with neck), 0.56 (TCGA), 0.52 (orientation head);
mask voxels on exact-zero background <= 0.0004 on IXI/TCGA, 0.16 on the orientation head (its
zeroed background reaches into the brain), 0.355 when HD-BET ran on the stripped SRI24 brain;
FOV-edge share 0-0.0014 (IXI/TCGA), 0.036 (orientation); per-axis registration scale native ->
SRI24 0.95-1.10 and |shear| <= 0.11 (IXI/TCGA), 1.59 and 0.56 on the orientation head.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from braing3n.preprocess.io import ScanError
from braing3n.preprocess.register import affine_matrix


@dataclass(frozen=True)
class CheckParams:
    min_brain_ml: float = 300.0
    max_brain_ml: float = 2500.0
    # HD-BET route only; 0.95: a phantom whose Otsu head is its brain gives 0.90
    brain_head_range: tuple[float, float] = (0.2, 0.95)
    max_zero_in_mask: float = 0.25
    min_largest_share: float = 0.95
    max_edge_fraction: float = 0.05
    scale_range: tuple[float, float] = (0.75, 1.35)
    max_shear: float = 0.25


# The chain's stages, as failure reasons name them ("<file>: <stage>: <problem>").
STAGES = ("read", "head mask", "input", "n4", "hdbet", "register", "resample", "write", "session")


def scan_reason(raw: str, exc: BaseException) -> str:
    """A bad-data failure's one line, ``"<file>: <stage>: <problem>"``: the stage is inserted from the
    exception's tag (preprocess/faults.py `stage`) where the message does not name one already."""
    from braing3n.preprocess.faults import stage_of

    line = (str(exc).splitlines() or [""])[0]
    prefix = f"{raw}: "
    rest = line[len(prefix):] if line.startswith(prefix) else line
    if any(rest.startswith(f"{s}: ") for s in STAGES):
        return prefix + rest
    return f"{prefix}{stage_of(exc)}: {rest}"


def _fail(raw: str, stage: str, text: str) -> None:
    raise ScanError(f"{raw}: {stage}: {text}")


def edge_fraction(mask: np.ndarray) -> float:
    """Fraction of the mask's voxels on the field of view's six faces (a brain cut by the FOV)."""
    edge = np.zeros(mask.shape, bool)
    edge[[0, -1]] = edge[:, [0, -1]] = edge[:, :, [0, -1]] = True
    return float((mask & edge).sum()) / max(int(mask.sum()), 1)


def mask_numbers(mask: np.ndarray, data: np.ndarray, head: np.ndarray | None, spacing) -> dict:
    voxel_ml = float(np.prod(spacing)) / 1000.0
    _, pieces = ndimage.label(mask)
    out = {"brain_volume_ml": round(float(mask.sum()) * voxel_ml, 2),
           "mask_zero_fraction": round(float((data[mask] == 0).mean()) if mask.any() else 0.0, 4),
           "mask_pieces": int(pieces), "mask_edge_fraction": round(edge_fraction(mask), 4)}
    if head is not None:
        out["head_volume_ml"] = round(float(head.sum()) * voxel_ml, 2)
        out["brain_head_fraction"] = round(float(mask.sum()) / max(int(head.sum()), 1), 4)
    return out


def check_mask(raw: str, stage: str, mask: np.ndarray, data: np.ndarray, head: np.ndarray | None, spacing,
               params: CheckParams, extra: dict | None = None) -> dict:
    """Brain-mask checks; returns the numbers, raises ScanError naming ``stage`` on the first failure.

    ``head`` is None on the stripped route (the head is the brain: no ratio to check);
    ``extra`` may carry `support_largest_share` (pieces before the largest was kept)."""
    q = {**mask_numbers(mask, data, head, spacing), **(extra or {})}
    ml = q["brain_volume_ml"]
    if ml < params.min_brain_ml:
        _fail(raw, stage, f"empty brain mask ({ml:.0f} mL < min_brain_ml {params.min_brain_ml:g} mL)")
    if ml > params.max_brain_ml:
        _fail(raw, stage, f"brain mask of {ml:.0f} mL is larger than any brain (max {params.max_brain_ml:g} mL)")
    if "brain_head_fraction" in q:
        lo, hi = params.brain_head_range
        f = q["brain_head_fraction"]
        if not lo <= f <= hi:
            _fail(raw, stage, f"brain mask covers {100 * f:.0f}% of the head (expected {100 * lo:.0f}-{100 * hi:.0f}%)")
    if q["mask_zero_fraction"] > params.max_zero_in_mask:
        _fail(raw, stage, f"{100 * q['mask_zero_fraction']:.1f}% of the brain mask lies on zero background "
                          f"(expected <= {100 * params.max_zero_in_mask:g}%; a skull-stripped input? "
                          "declare skull_stripped: true)")
    share = q.get("support_largest_share")
    if share is not None and share < params.min_largest_share:
        _fail(raw, stage, f"brain mask split into pieces: the largest holds {100 * share:.1f}% of the voxels "
                          f"(expected >= {100 * params.min_largest_share:g}%)")
    if q["mask_edge_fraction"] > params.max_edge_fraction:
        _fail(raw, stage, f"{100 * q['mask_edge_fraction']:.1f}% of the brain mask touches the field-of-view edge "
                          f"(expected <= {100 * params.max_edge_fraction:g}%: brain cut off?)")
    return q


def scale_shear(mat_path: str) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-axis scale, shears and determinant of the native -> SRI24 map of an ANTs .mat.

    The .mat maps atlas points to native ones; its inverse's QR factor R = scale x unit-shear."""
    a = np.linalg.inv(affine_matrix(mat_path)[:3, :3])
    _, r = np.linalg.qr(a)
    scale = np.abs(np.diag(r))
    shear = np.array([r[0, 1] / r[0, 0], r[0, 2] / r[0, 0], r[1, 2] / r[1, 1]])
    return scale, shear, float(np.linalg.det(a))


def check_registration(raw: str, mat_path: str, params: CheckParams) -> dict:
    """Scale/shear/reflection of the affine; returns the numbers, raises ScanError on the first failure."""
    scale, shear, det = scale_shear(mat_path)
    q = {"reg_scale": [round(float(s), 4) for s in scale], "reg_shear": [round(float(s), 4) for s in shear],
         "reg_det": round(det, 4)}
    lo, hi = params.scale_range
    if det <= 0:
        _fail(raw, "register", f"affine to SRI24 mirrors the head (determinant {det:.3f} <= 0)")
    for axis, s in zip("xyz", scale, strict=True):
        if not lo <= s <= hi:
            _fail(raw, "register", f"affine to SRI24 scales axis {axis} by {s:.2f} (expected {lo:g}-{hi:g})")
    worst = int(np.argmax(np.abs(shear)))
    if abs(shear[worst]) > params.max_shear:
        _fail(raw, "register", f"affine to SRI24 shears by {shear[worst]:.2f} ({('xy', 'xz', 'yz')[worst]}; "
                               f"expected |shear| <= {params.max_shear:g})")
    return q


def check_ncc(raw: str, ncc: float, min_ncc: float) -> None:
    if ncc < min_ncc:
        _fail(raw, "register", f"registration to SRI24 failed (NCC {ncc:.3f} with the SRI24 brain "
                               f"< min_ncc_t1 {min_ncc})")
