"""Tissue classes of the SRI24 head, derived once and stored in ``resources/atlas``.

SRI24 ships only intensities, so the phantom derives its own classes:
- CSF/GM/WM: a 3-class Gaussian mixture on the skull-stripped T1 inside the brain mask
  (fitted on a fixed 200k-voxel sample, seed 0); the fitted means/SDs/weights are stored in
  ``sri24_tissues_derived.json`` so soft posteriors can be recomputed exactly at run time;
- skull/scalp (label 7): the head (Otsu threshold of the T1 with skull, closed, largest
  component, holes filled per slice) outside the brain mask;
- lateral ventricles: the two largest dark components (T1 < 230, i.e. deep CSF) in a central
  box, grown by one voxel into the CSF class.

`braing3n phantom tissues [--out DIR]` rewrites the three files; `load_tissues()`,
`load_ventricles()` and `tissue_probabilities()` read them (atlas grid, 240x240x155 LPS).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from braing3n import atlas as atlas_mod

LABELS = {0: "background", 1: "CSF", 2: "GM", 3: "WM", 4: "tumour_core", 5: "enhancing_rim", 6: "oedema",
          7: "skull_scalp"}
FILES = {"labels": "sri24_tissues_derived.nii.gz", "ventricles": "sri24_ventricles_derived.nii.gz",
         "params": "sri24_tissues_derived.json"}
VENTRICLE_T1_MAX = 230.0  # skull-stripped T1 units: below this is deep CSF, not partial volume
VENTRICLE_BOX = (slice(85, 155), slice(60, 180), slice(60, 115))


def _atlas_dir(atlas_dir: str | os.PathLike | None) -> Path:
    return Path(atlas_dir) if atlas_dir else atlas_mod.ATLAS_DIR


def _load(path: Path) -> np.ndarray:
    return np.asanyarray(nib.load(path).dataobj)


def _posteriors(t1_brain: np.ndarray, mask: np.ndarray, params: dict) -> np.ndarray:
    """(3, N) posteriors of CSF/GM/WM for the masked voxels under the stored mixture."""
    x = t1_brain[mask].astype(np.float64)
    mu, sd, w = (np.asarray(params[k], float)[:, None] for k in ("means", "sds", "weights"))
    logp = np.log(w) - np.log(sd) - 0.5 * ((x[None] - mu) / sd) ** 2
    logp -= logp.max(0, keepdims=True)
    p = np.exp(logp)
    return (p / p.sum(0, keepdims=True)).astype(np.float32)


def derive_tissues(atlas_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Compute (labels uint8, ventricles uint8, mixture params) from the stored SRI24 files."""
    from skimage.filters import threshold_otsu
    from sklearn.mixture import GaussianMixture

    a = atlas_mod.atlas_paths(atlas_dir)
    head_t1 = _load(a.t1).astype(np.float32)
    brain_t1 = _load(a.t1_brain).astype(np.float32)
    mask = _load(a.brain_mask) > 0
    x = brain_t1[mask][:, None]
    sample = x[np.random.default_rng(0).choice(len(x), min(200_000, len(x)), replace=False)]
    gmm = GaussianMixture(3, random_state=0, means_init=[[200.0], [450.0], [700.0]]).fit(sample)
    order = np.argsort(gmm.means_.ravel())
    params = {"means": gmm.means_.ravel()[order].tolist(), "sds": np.sqrt(gmm.covariances_.ravel()[order]).tolist(),
              "weights": gmm.weights_[order].tolist(), "classes": ["CSF", "GM", "WM"],
              "ventricle_t1_max": VENTRICLE_T1_MAX}
    labels = np.zeros(mask.shape, np.uint8)
    labels[mask] = _posteriors(brain_t1, mask, params).argmax(0) + 1

    head = head_t1 > 0.5 * threshold_otsu(head_t1[head_t1 > 0])
    head = ndi.binary_closing(head, iterations=3)
    comp, n = ndi.label(head)
    head = comp == (np.argmax(ndi.sum(head, comp, range(1, n + 1))) + 1)
    head = np.stack([ndi.binary_fill_holes(head[:, :, k]) for k in range(head.shape[2])], 2) | mask
    labels[head & ~mask] = 7

    deep = np.zeros_like(mask)
    deep[VENTRICLE_BOX] = (brain_t1[VENTRICLE_BOX] < VENTRICLE_T1_MAX) & mask[VENTRICLE_BOX]
    comp, n = ndi.label(deep)
    sizes = ndi.sum(deep, comp, range(1, n + 1))
    keep = np.argsort(sizes)[::-1][:2] + 1
    vent = np.isin(comp, keep)
    vent = ndi.binary_dilation(vent) & (labels == 1) | vent
    params["ventricle_ml"] = float(vent.sum()) / 1000.0
    params["class_ml"] = {LABELS[k]: float((labels == k).sum()) / 1000.0 for k in (1, 2, 3, 7)}
    return labels, vent.astype(np.uint8), params


def write_tissues(out_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    out = _atlas_dir(out_dir)
    labels, vent, params = derive_tissues(out_dir)
    paths = {k: out / v for k, v in FILES.items()}
    for key, data in (("labels", labels), ("ventricles", vent)):
        img = nib.Nifti1Image(data, atlas_mod.AFFINE)
        img.set_qform(atlas_mod.AFFINE, code=1)
        img.set_sform(atlas_mod.AFFINE, code=1)
        img.header.set_xyzt_units("mm")
        tmp = paths[key].with_name("." + paths[key].name)
        nib.save(img, tmp)
        os.replace(tmp, paths[key])
    paths["params"].write_text(json.dumps(params, indent=1) + "\n")
    _cached.cache_clear()
    return paths


@functools.lru_cache(maxsize=2)
def _cached(atlas_dir: str) -> dict:
    d = Path(atlas_dir)
    out = {}
    for key in ("labels", "ventricles", "params"):
        if not (d / FILES[key]).exists():
            raise atlas_mod.AtlasMissingError(
                f"{d / FILES[key]}: derived SRI24 tissue file missing; rebuild it with `braing3n phantom tissues`")
    out["labels"] = _load(d / FILES["labels"]).astype(np.uint8)
    out["ventricles"] = _load(d / FILES["ventricles"]) > 0
    out["params"] = json.loads((d / FILES["params"]).read_text())
    return out


def load_tissues(atlas_dir: str | os.PathLike | None = None) -> np.ndarray:
    """Atlas-grid uint8 labels: 0 background, 1 CSF, 2 GM, 3 WM, 7 skull/scalp (see LABELS). Read-only."""
    return _cached(str(_atlas_dir(atlas_dir)))["labels"]


def load_ventricles(atlas_dir: str | os.PathLike | None = None) -> np.ndarray:
    """Atlas-grid boolean mask of the lateral ventricles. Read-only."""
    return _cached(str(_atlas_dir(atlas_dir)))["ventricles"]


def tissue_params(atlas_dir: str | os.PathLike | None = None) -> dict:
    return dict(_cached(str(_atlas_dir(atlas_dir)))["params"])


def tissue_probabilities(atlas_dir: str | os.PathLike | None = None) -> np.ndarray:
    """(3, 240, 240, 155) float32 soft CSF/GM/WM posteriors (zero outside the brain mask)."""
    a = atlas_mod.atlas_paths(atlas_dir)
    brain_t1 = _load(a.t1_brain).astype(np.float32)
    mask = _load(a.brain_mask) > 0
    probs = np.zeros((3, *mask.shape), np.float32)
    probs[:, mask] = _posteriors(brain_t1, mask, tissue_params(atlas_dir))
    return probs


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="braing3n phantom tissues", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="atlas folder (default resources/atlas)")
    args = p.parse_args(argv)
    paths = write_tissues(args.out)
    params = json.loads(paths["params"].read_text())
    print(f"wrote {', '.join(str(v) for v in paths.values())}; volumes (ml) {params['class_ml']}, "
          f"ventricles {params['ventricle_ml']:.1f} ml")
    return 0
