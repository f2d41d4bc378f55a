"""ANTs registration: T1 -> SRI24 affine; other modalities -> same-session T1 rigid; one resampling.

The defaults of ``ants.registration('Affine')`` run 2100x1200x1200x10 iterations at four levels;
a brain-to-brain affine converges long before that, so a three-level pyramid with ~10x fewer
iterations and 20% random metric sampling gives the same alignment (measured in the benchmark).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

import ants
import numpy as np


@dataclass(frozen=True)
class RegParams:
    transform: str = "Affine"
    metric: str = "mattes"
    sampling_rate: float = 0.2
    iterations: tuple[int, ...] = (100, 50, 20)
    shrink_factors: tuple[int, ...] = (4, 2, 1)
    smoothing_sigmas: tuple[float, ...] = (2, 1, 0)


def register(fixed: ants.ANTsImage, moving: ants.ANTsImage, params: RegParams, out_mat: str,
             fixed_mask: ants.ANTsImage | None = None, seed: int = 0) -> str:
    """Register ``moving`` to ``fixed``; copy the forward transform to ``out_mat`` (ANTs .mat)."""
    if not (len(params.iterations) == len(params.shrink_factors) == len(params.smoothing_sigmas)):
        raise ValueError("registration iterations, shrink_factors and smoothing_sigmas need equal lengths")
    # ANTsPy 0.6 ignores a `random_seed` keyword: antsRegistration gets `--random-seed` only from
    # ants.config (and reads 0 as "seed from the clock", hence the nonzero seed). Its threaded
    # metric sums are not reproducible either, so the registration itself runs on one ITK thread
    # (the setter does that through the environment); the job's thread count is restored after.
    threads = os.environ.get("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS")
    ants.config.set_ants_deterministic(True, seed_value=int(seed) % (2**31 - 2) + 1)
    try:
        reg = ants.registration(
            fixed=fixed, moving=moving, type_of_transform=params.transform, mask=fixed_mask,
            mask_all_stages=fixed_mask is not None, aff_metric=params.metric,
            aff_random_sampling_rate=params.sampling_rate, aff_iterations=tuple(params.iterations),
            aff_shrink_factors=tuple(params.shrink_factors), aff_smoothing_sigmas=tuple(params.smoothing_sigmas))
    finally:
        if threads is None:
            os.environ.pop("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", None)
        else:
            os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = threads
    fwd = reg["fwdtransforms"]
    if len(fwd) != 1 or not fwd[0].endswith(".mat"):
        raise RuntimeError(f"expected one linear transform from ants.registration, got {fwd}")
    shutil.copyfile(fwd[0], out_mat)
    return out_mat


def to_atlas(fixed: ants.ANTsImage, moving: ants.ANTsImage, transforms: list[str],
             label: bool = False) -> ants.ANTsImage:
    """Resample ``moving`` ONCE into ``fixed``'s grid through the composed ``transforms``.

    ANTs applies the list right to left: [T1->atlas, modality->T1] maps a modality to the atlas.
    """
    return ants.apply_transforms(fixed=fixed, moving=moving, transformlist=list(transforms),
                                 interpolator="genericLabel" if label else "linear")


def affine_matrix(mat_path: str) -> np.ndarray:
    """The 4x4 matrix of an ANTs .mat in LPS world mm, mapping FIXED points to MOVING points."""
    tx = ants.read_transform(mat_path)
    p = np.asarray(tx.parameters, float)
    a, t = p[:9].reshape(3, 3), p[9:12]
    c = np.asarray(tx.fixed_parameters, float)
    m = np.eye(4)
    m[:3, :3] = a
    m[:3, 3] = t + c - a @ c
    return m
