"""The full chain with the real HD-BET network: phantom ground truth and real scans (../shared/data).

Each full-chain scan costs ~30-90 s of CPU, so each scan runs once in a module-scoped fixture.
"""

import json
from pathlib import Path

import ants
import nibabel as nib
import numpy as np
import pytest

from braing3n.preprocess import qc
from braing3n.preprocess.cli import process, set_threads
from braing3n.preprocess.io import read_scan
from braing3n.preprocess.register import affine_matrix

pytestmark = pytest.mark.slow
CFG = {"preprocess": {"hdbet": {"mode": "fast", "device": "cpu"}}, "seed": 0}
FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS <-> LPS


def run_scan(out: Path, raw, modality="T1", subject="S1", t1_record=None, config=CFG):
    rec = out / f"sub-{subject}_ses-01_{modality}_qc.json"
    kind = "t1" if modality == "T1" else "modality"
    r = process(kind, str(raw), str(rec), "c", subject, "01", modality, config, t1_record and str(t1_record))
    assert r["status"] == "ok", r["reason"]
    return r, rec


def load(rec: Path, key: str) -> np.ndarray:
    r = json.loads(rec.read_text())
    return np.asanyarray(nib.load(str(rec.parent / r["outputs"][key])).dataobj).astype(np.float32)


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    from braing3n.phantom.generate import generate_cohort
    from braing3n.phantom.plan import plan_cohort

    set_threads(1)
    root = tmp_path_factory.mktemp("phantom")
    spec = {"mapping": "config/cohorts/phantommem.yaml", "root": str(root / "raw"),
            "phantom": {"style": "adni", "n_subjects": 1, "n_longitudinal": 0, "modalities": {"T1": 1},
                        "voxel_sizes": {"2": 1}, "orientations": {"PSR": 1}}}
    config = {"phantom": {"seed": 3}, "seed": 0}
    plan = plan_cohort("ptest", spec, config)
    generate_cohort(plan, config, log=lambda *a: None)
    scan = plan.scans[0]
    rec = run_scan(root / "out", scan.path)[1]
    truth_stem = Path(spec["root"]) / f"derivatives/truth/sub-{scan.subject}_ses-{scan.session}_T1"
    return scan, rec, truth_stem


def test_phantom_registration_mask_and_n4_against_truth(phantom):
    scan, rec, truth_stem = phantom
    r = json.loads(rec.read_text())
    truth = json.loads(Path(f"{truth_stem}_truth.json").read_text())
    # ANTs .mat maps atlas (fixed) LPS points to native (moving) LPS points; truth is RAS
    ours = FLIP @ affine_matrix(str(rec.parent / r["outputs"]["xfm"])) @ FLIP
    true = np.asarray(truth["atlas_to_native"], float)
    mask_img = nib.load(str(Path(__file__).resolve().parents[1] / "resources/atlas/sri24_brain_mask.nii.gz"))
    vox = np.argwhere(np.asanyarray(mask_img.dataobj) > 0)[::20]
    pts = nib.affines.apply_affine(mask_img.affine, vox)
    err = np.linalg.norm(nib.affines.apply_affine(ours, pts) - nib.affines.apply_affine(true, pts), axis=1)
    assert err.mean() <= 1.5, f"mean displacement {err.mean():.2f} mm"
    # brain mask vs truth (native grid; our native files are the canonical reorientation of it)
    ours_mask = nib.load(str(rec.parent / r["outputs"]["native_brain_mask"]))
    true_mask = nib.as_closest_canonical(nib.load(f"{truth_stem}_brainmask.nii.gz"))
    np.testing.assert_allclose(ours_mask.affine, true_mask.affine, atol=1e-3)
    d = qc.dice(np.asanyarray(ours_mask.dataobj) > 0, np.asanyarray(true_mask.dataobj) > 0)
    assert d >= 0.95, f"mask Dice {d:.3f}"
    # N4 at least halves the white-matter CoV due to the bias field (truth labels 3 = WM). The raw
    # CoV also holds noise that no bias correction can remove, so compare the field itself: the
    # true bias vs what is left of it after N4 (raw/N4 estimates the field up to a constant).
    labels = nib.as_closest_canonical(nib.load(f"{truth_stem}_labels.nii.gz"))
    wm = np.asanyarray(labels.dataobj) == 3
    bias = np.asanyarray(nib.as_closest_canonical(nib.load(f"{truth_stem}_bias.nii.gz")).dataobj).astype(np.float64)
    raw = read_scan(scan.path).numpy().astype(np.float64)
    n4 = np.asanyarray(nib.load(str(rec.parent / r["outputs"]["native_n4"])).dataobj).astype(np.float64)
    shifted = raw - raw.min() + 1.0 if raw.min() <= 0 else raw  # as n4() feeds N4
    est = np.where(wm, shifted / np.where(wm, n4, 1.0), 1.0)  # N4 output = input / field: exact, noise-free
    residual = bias / est
    assert qc.wm_cov(residual, wm) <= 0.5 * qc.wm_cov(bias, wm), (qc.wm_cov(residual, wm), qc.wm_cov(bias, wm))
    assert qc.wm_cov(n4, wm) < qc.wm_cov(raw, wm)


@pytest.fixture(scope="module")
def tcga(shared_data, tmp_path_factory):
    set_threads(1)
    d = shared_data / "tcga-fg-6692"
    out = tmp_path_factory.mktemp("tcga")
    t1 = run_scan(out, d / "t1.nii.gz")[1]
    recs = {"T1": t1}
    for mod, name in (("T1c", "t1c"), ("T2", "t2"), ("FLAIR", "flair")):
        recs[mod] = run_scan(out, d / f"{name}.nii.gz", mod, t1_record=t1)[1]
    return d, recs


def test_tcga_modalities_aligned_to_t1_and_atlas(tcga):
    d, recs = tcga
    mask = load(recs["T1"], "brain_mask") > 0
    t1 = load(recs["T1"], "volume")
    t1r = json.loads(recs["T1"].read_text())
    assert 900 <= t1r["qc"]["brain_volume_ml"] <= 1900 and t1r["qc"]["dice_atlas_mask"] >= 0.85
    for mod in ("T1c", "T2", "FLAIR"):
        r = json.loads(recs[mod].read_text())
        q = r["qc"]
        assert q["nmi_t1_after"] >= q["nmi_t1_before"] + 0.02 and q["nmi_t1_after"] >= 1.03, (mod, q)
        assert qc.nmi(load(recs[mod], "volume"), t1, mask) >= 1.03, mod
        assert r["outputs"]["brain_mask"] == t1r["outputs"]["brain_mask"]
    # the provided HD-BET T1c mask, mapped through [T1->atlas, T1c->T1] like the T1c itself
    t1c = json.loads(recs["T1c"].read_text())
    atlas = ants.image_read(str(recs["T1"].parent / t1r["outputs"]["volume"]))
    ref = ants.apply_transforms(atlas, read_scan(d / "t1c_brainmask_hdbet.nii.gz"),
                                [str(recs["T1c"].parent / t) for t in t1c["transforms_to_atlas"]],
                                interpolator="genericLabel").numpy() > 0
    assert qc.dice(mask, ref) >= 0.85, qc.dice(mask, ref)


def _t1_in_fresh_process(out: Path, raw: Path) -> np.ndarray:
    """One T1 through the CLI in its own interpreter, as Snakemake runs it (no state from other tests)."""
    import os
    import subprocess
    import sys

    import yaml

    out.mkdir(parents=True)
    cfg = out / "config.yaml"
    # a 2.4 mm head with letters burned in: its NCC with SRI24 is low (0.26) and its affine scales y
    # by 1.59 with a 0.56 shear, so no threshold here
    cfg.write_text(yaml.safe_dump({"cohorts": {"c": {"mapping": "none", "root": str(out)}}, "seed": 0,
                                   "preprocess": {**CFG["preprocess"], "min_ncc_t1": 0.0,
                                                  "reg_scale_range": [0.3, 3.0], "max_reg_shear": 2.0}}))
    rec = out / "sub-S1_ses-01_T1_qc.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ITK_")}
    run = subprocess.run([sys.executable, "-m", "braing3n", "preprocess", "t1", "--configfile", str(cfg),
                          "--threads", "1", "--raw", str(raw), "--record", str(rec), "--cohort", "c",
                          "--subject", "S1", "--session", "01"], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    r = json.loads(rec.read_text())
    assert r["status"] == "ok", r["reason"]
    return load(rec, "volume")


def test_ras_and_lps_give_the_same_atlas_output(shared_data, tmp_path):
    d = shared_data / "orientation"
    a = _t1_in_fresh_process(tmp_path / "ras", d / "RAS.nii.gz")
    b = _t1_in_fresh_process(tmp_path / "lps", d / "LPS.nii.gz")
    m = (a > 0) | (b > 0)
    # The reader makes both files the same canonical array and affine (tested exactly in
    # test_preprocess) and the chain is seeded; run as separate processes the outputs were
    # identical here. Thresholds leave room for a process-state dependence seen once inside the
    # full suite (Dice 0.95, NCC 0.74) on this ill-conditioned head (atlas-mask Dice ~0.78).
    assert qc.dice(a > 0, b > 0) >= 0.9
    assert qc.ncc(a, b, m) >= 0.7


def test_ixi_brain_volume_plausible(shared_data, tmp_path):
    set_threads(1)
    r, _ = run_scan(tmp_path, shared_data / "ixi-t1-2mm" / "IXI132-HH-1415_T1.nii.gz")
    assert 900 <= r["qc"]["brain_volume_ml"] <= 1800 and r["qc"]["ncc_atlas"] >= 0.4
