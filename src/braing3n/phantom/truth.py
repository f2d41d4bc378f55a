"""Read a phantom scan's ground truth (for accuracy tests and reports).

    t = load_truth(cohort_root, scan_ref)        # or load_truth(path_to_truth_json)
    t["atlas_to_native"]                          # 4x4 numpy array (RAS mm, atlas world -> scan world)
    t["brainmask"], t["bias"], t["labels"], t["image"]   # absolute paths
Keys are documented in docs/phantom.md.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from braing3n.metadata.discover import ScanRef

LABELS = {0: "background", 1: "CSF", 2: "GM", 3: "WM", 4: "tumour_core", 5: "enhancing_rim", 6: "oedema",
          7: "skull_scalp"}
BRAIN_LABELS = (1, 2, 3, 4, 5, 6)


def truth_path(root: str | os.PathLike, ref: ScanRef) -> Path:
    return Path(root) / "derivatives" / "truth" / f"sub-{ref.subject}_ses-{ref.session}_{ref.modality}_truth.json"


def load_truth(root_or_json: str | os.PathLike, ref: ScanRef | None = None) -> dict:
    """The truth JSON with image paths made absolute and ``atlas_to_native`` as an array."""
    if ref is not None:
        root, path = Path(root_or_json), truth_path(root_or_json, ref)
    else:
        path = Path(root_or_json)
        root = path.parents[2]  # {root}/derivatives/truth/x.json
    if not path.exists():
        raise FileNotFoundError(f"{path}: no phantom ground truth (is this a phantom cohort, generated?)")
    truth = json.loads(path.read_text())
    for key in ("image", "brainmask", "bias", "labels"):
        truth[key] = str((root / truth[key]).resolve())
    truth["atlas_to_native"] = np.asarray(truth["atlas_to_native"], float)
    truth["native_affine"] = np.asarray(truth["native_affine"], float)
    return truth
