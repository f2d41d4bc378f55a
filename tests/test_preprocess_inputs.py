"""Skull-stripped and already-in-SRI24 inputs (preprocess/inputs.py) and the stage-named checks
(preprocess/checks.py), on cases built on the fly from ../shared/data (issue #21).

`sri24-extras/spgr.nii.gz` is the skull-stripped SRI24 T1 in LAS voxel order, voxel for voxel the
atlas brain `resources/atlas/sri24_t1_brain.nii.gz` (LPS) once its y axis is flipped.
"""

import json
from pathlib import Path

import ants
import nibabel as nib
import numpy as np
import pytest

from braing3n.preprocess import chain, checks, inputs, qc
from braing3n.preprocess.cli import main as preprocess_main
from braing3n.preprocess.cli import process, set_threads
from braing3n.preprocess.declared import Declared, declared_inputs, parse_cli_flags
from braing3n.preprocess.io import ScanError, load_nifti, read_scan

REPO = Path(__file__).resolve().parents[1]
ATLAS_BRAIN = REPO / "resources" / "atlas" / "sri24_t1_brain.nii.gz"
CFG = {"preprocess": {"hdbet": {"mode": "fast", "device": "cpu"}}, "seed": 0}


def run_t1(out: Path, raw, declared=None, config=CFG):
    rec = out / "sub-S1_ses-01_T1_qc.json"
    return process("t1", str(raw), str(rec), "c", "S1", "01", "T1", config, None, declared), rec


def volume(rec: Path, key: str = "volume") -> np.ndarray:
    r = json.loads(rec.read_text())
    return np.asanyarray(nib.load(str(rec.parent / r["outputs"][key])).dataobj)


# --- detection (cheap: read only) -------------------------------------------------------------
def test_raw_heads_are_not_detected_as_stripped_and_stripped_ones_are(shared_data, tmp_path):
    raws = sorted((shared_data / "ixi-t1-2mm").glob("IXI*_T1.nii.gz"))[:6]
    raws += [shared_data / "tcga-fg-6692" / f"{m}.nii.gz" for m in ("t1", "t2", "flair")]
    raws += [shared_data / "orientation" / "RAS.nii.gz"]
    for raw in raws:
        frac = inputs.tissue_edge_fraction(read_scan(raw))
        assert frac < 0.6, (raw.name, frac)  # measured 0.04-0.47
        stripped, why, _ = inputs.decide_stripped(Declared(), read_scan(raw))
        assert not stripped and why.startswith("raw head: "), why
    # the TCGA T1 times a brain mask (a sphere-free, real-shaped one: its bright tissue, closed)
    t1 = load_nifti(shared_data / "tcga-fg-6692" / "t1.nii.gz")
    stripped_t1 = tmp_path / "t1_stripped.nii.gz"
    nib.save(nib.Nifti1Image(np.asanyarray(t1.dataobj) * tcga_brain(t1), t1.affine), str(stripped_t1))
    for raw in (shared_data / "sri24-extras" / "spgr.nii.gz", shared_data / "sri24-extras" / "late.nii.gz",
                stripped_t1):
        stripped, why, frac = inputs.decide_stripped(Declared(), read_scan(raw))
        assert stripped and frac >= 0.95 and why.startswith("detected skull-stripped"), (raw, why)
    # a declaration wins over the image
    assert inputs.decide_stripped(Declared(skull_stripped=False), read_scan(stripped_t1))[0] is False


def tcga_brain(img: nib.Nifti1Image) -> np.ndarray:
    """A brain-shaped mask for the TCGA T1 without HD-BET: an ellipsoid around the head's centre
    with the head's own extent shrunk by 20 mm (used only where the mask's exact shape is moot)."""
    data = np.asanyarray(img.dataobj)
    head = data > np.percentile(data, 60)
    idx = np.argwhere(head)
    centre, half = idx.mean(0), (idx.max(0) - idx.min(0)) / 2
    zooms = np.asarray(img.header.get_zooms()[:3])
    half = np.maximum(half - 20 / zooms, 2)
    g = np.stack(np.meshgrid(*[np.arange(n) for n in data.shape], indexing="ij"), -1)
    return (((g - centre) / half) ** 2).sum(-1) <= 1


def test_sri24_grid_is_recognised_up_to_axis_order_flips_and_origin():
    atlas = read_scan(ATLAS_BRAIN)
    assert inputs.sri24_grid(atlas)[0]
    data = atlas.numpy()
    for perm, flip in (((1, 0, 2), 0), ((2, 1, 0), 2), ((0, 1, 2), 1)):
        moved = np.flip(np.transpose(data, perm), flip)
        img = ants.from_numpy(np.ascontiguousarray(moved), origin=[12.5, -3.0, 99.0], spacing=(1.0, 1.0, 1.0),
                              direction=np.eye(3)[list(perm)].T * np.where(np.arange(3) == flip, -1, 1))
        assert inputs.sri24_grid(img)[0], (perm, flip)
    small = ants.resample_image(atlas, (2.0, 2.0, 2.0), use_voxels=False)
    on, why = inputs.sri24_grid(small)
    assert not on and "not the SRI24 grid" in why
    with pytest.raises(ScanError, match=r"x\.nii\.gz: input: declared space SRI24 but its grid 120x120x78"):
        inputs.decide_grid("x.nii.gz", Declared(space="SRI24"), small)


# --- (a) spgr in LAS / RAS+shifted origin == the atlas-grid input -----------------------------
@pytest.fixture(scope="module")
def spgr_runs(shared_data, tmp_path_factory):
    set_threads(1)
    tmp = tmp_path_factory.mktemp("spgr")
    spgr = shared_data / "sri24-extras" / "spgr.nii.gz"
    img = nib.load(str(spgr))
    ras = nib.as_closest_canonical(nib.Nifti1Image(np.asanyarray(img.dataobj)[..., 0], img.affine))
    aff = ras.affine.copy()
    aff[:3, 3] += [-120.3, 17.0, 40.0]  # BraTS-style: RAS voxel order, shifted origin
    shifted = tmp / "spgr_ras_shifted.nii.gz"
    nib.save(nib.Nifti1Image(np.asanyarray(ras.dataobj), aff), str(shifted))
    runs = {}
    for name, raw in (("atlas", ATLAS_BRAIN), ("las", spgr), ("ras", shifted)):
        r, rec = run_t1(tmp / name, raw)
        assert r["status"] == "ok", r["reason"]
        runs[name] = (r, rec)
    return runs


def test_sri24_stripped_input_is_reoriented_losslessly_without_registration(spgr_runs):
    ref = volume(spgr_runs["atlas"][1])
    atlas_brain = np.asanyarray(nib.load(str(ATLAS_BRAIN)).dataobj)
    for name in ("las", "ras"):
        r, rec = spgr_runs[name]
        assert r["input_route"] == "stripped+sri24", r["input_route_why"]
        assert "detected skull-stripped" in r["input_route_why"] and "SRI24 grid" in r["input_route_why"]
        assert np.array_equal(volume(rec), ref), name  # voxel-identical to the atlas-grid input
        assert np.array_equal(volume(rec, "brain_mask") > 0, atlas_brain > 0)  # mask = the brain's support
        tx = ants.read_transform(str(rec.parent / r["outputs"]["xfm"]))
        np.testing.assert_allclose(np.asarray(tx.parameters)[:9].reshape(3, 3), np.eye(3))
        np.testing.assert_allclose(np.asarray(tx.parameters)[9:], 0.0)
    # only N4 changed the intensities: same support, NCC with the atlas brain ~1
    assert qc.ncc(ref, atlas_brain, atlas_brain > 0) >= 0.99
    # the QC table says the route and holds the check numbers
    from braing3n.preprocess.qc_table import build_table

    recs = [str(rec) for _, rec in spgr_runs.values()]
    df = build_table(recs, str(spgr_runs["atlas"][1].parent / "qc.parquet"), {"preprocess": {}}, 3.5)
    assert (df["input_route"] == "stripped+sri24").all() and (df["tissue_edge_fraction"] > 0.99).all()
    assert (df["mask_zero_fraction"] == 0).all() and (df["support_largest_share"] == 1.0).all()


# --- (b) TCGA T1 stripped with its own brain mask == the raw run in atlas space ---------------
def test_stripped_tcga_t1_gives_the_raw_runs_atlas_brain(shared_data, tmp_path):
    set_threads(1)
    raw = shared_data / "tcga-fg-6692" / "t1.nii.gz"
    r_raw, rec_raw = run_t1(tmp_path / "raw", raw)
    assert r_raw["status"] == "ok" and r_raw["input_route"] == "raw+native", r_raw.get("reason")
    native = nib.load(str(rec_raw.parent / r_raw["outputs"]["native_brain_mask"]))
    t1 = load_nifti(raw)  # the same canonical grid as the native mask
    np.testing.assert_allclose(native.affine, t1.affine, atol=1e-3)
    stripped = tmp_path / "t1_brain.nii.gz"
    nib.save(nib.Nifti1Image(np.asanyarray(t1.dataobj) * (np.asanyarray(native.dataobj) > 0), t1.affine),
             str(stripped))
    r_str, rec_str = run_t1(tmp_path / "stripped", stripped)
    assert r_str["status"] == "ok", r_str["reason"]
    assert r_str["input_route"] == "stripped+native" and "detected skull-stripped" in r_str["input_route_why"]
    d = qc.dice(volume(rec_raw, "brain_mask") > 0, volume(rec_str, "brain_mask") > 0)
    assert d >= 0.97, f"atlas-space mask Dice {d:.3f}"
    a, b = volume(rec_raw).astype(np.float64), volume(rec_str).astype(np.float64)
    assert qc.ncc(a, b, (a > 0) | (b > 0)) >= 0.8  # measured 0.864: N4 fitted in the brain vs the head
    # declared through the CLI: same route, "declared" as the reason
    out = tmp_path / "cli" / "sub-S1_ses-01_T1_qc.json"
    cfg = tmp_path / "cfg.yaml"
    import yaml

    cfg.write_text(yaml.safe_dump({"cohorts": {"c": {"mapping": "none", "root": str(tmp_path)}}, **CFG}))
    assert preprocess_main(["t1", "--raw", str(stripped), "--record", str(out), "--cohort", "c", "--subject", "S1",
                            "--session", "01", "--configfile", str(cfg), "--skull-stripped", "yes",
                            "--space", "native"]) == 0
    rec = json.loads(out.read_text())
    assert rec["status"] == "ok" and rec["input_route"] == "stripped+native"
    assert rec["input_route_why"].startswith("declared skull-stripped")
    assert qc.dice(volume(out, "brain_mask") > 0, volume(rec_str, "brain_mask") > 0) >= 0.99


# --- (d) each check fails with its stage-named reason -----------------------------------------
def _brain_and_head():
    g = np.stack(np.meshgrid(*[np.arange(n) - n / 2 for n in (90, 110, 90)], indexing="ij"))
    r = np.sqrt((g[0] / 40) ** 2 + (g[1] / 50) ** 2 + (g[2] / 40) ** 2)
    return r < 0.75, r < 1.0  # 2 mm voxels: brain ~1,250 mL in a ~2,900 mL head


def test_each_mask_check_names_its_stage_and_number():
    brain, head = _brain_and_head()
    data = np.where(head, 100.0, 0.0)
    sp, cp = (2.0, 2.0, 2.0), checks.CheckParams()
    q = checks.check_mask("x.nii.gz", "hdbet", brain, data, head, sp, cp)
    assert 0.3 < q["brain_head_fraction"] < 0.5 and q["mask_zero_fraction"] == 0 and q["mask_pieces"] == 1
    half = brain.copy()
    half[: brain.shape[0] // 2 + 8] = False  # a bit less than one hemisphere
    cases = [
        (half, data, head, r"x\.nii\.gz: hdbet: brain mask covers 1\d% of the head \(expected 20-95%\)"),
        (np.zeros_like(brain), data, head, r"x\.nii\.gz: hdbet: empty brain mask \(0 mL < min_brain_ml 100 mL\)"),
        (brain, np.where(brain & (np.indices(brain.shape)[2] > 45), 0.0, data), head,
         r"x\.nii\.gz: hdbet: 4\d\.\d% of the brain mask lies on zero background \(expected <= 25%"),
        # the top third of the brain, its cut face on the field of view's bottom slice
        (np.pad(brain[:, :, 55:], ((0, 0), (0, 0), (0, 55))), np.full(brain.shape, 100.0), None,
         r"x\.nii\.gz: hdbet: 8\.\d% of the brain mask touches the field-of-view edge \(expected <= 5%"),
    ]
    for mask, d, h, pattern in cases:
        with pytest.raises(ScanError, match=pattern):
            checks.check_mask("x.nii.gz", "hdbet", mask, d, h, sp, checks.CheckParams(min_brain_ml=100))
    with pytest.raises(ScanError, match=r"x: input: brain mask split into pieces: the largest holds 80\.0%"):
        checks.check_mask("x", "input", brain, data, None, sp, cp, {"support_largest_share": 0.8})


def _mat(tmp_path: Path, matrix: np.ndarray) -> str:
    """An ANTs .mat mapping atlas points to native ones: the inverse of native -> atlas ``matrix``."""
    tx = ants.create_ants_transform(transform_type="AffineTransform", dimension=3)
    tx.set_parameters(np.concatenate([np.linalg.inv(matrix).ravel(), [3.0, -2.0, 1.0]]))
    path = str(tmp_path / f"m{len(list(tmp_path.iterdir()))}.mat")
    ants.write_transform(tx, path)
    return path


def test_registration_scale_shear_and_mirror_checks(tmp_path):
    cp = checks.CheckParams()
    ok = checks.check_registration("x.nii.gz", _mat(tmp_path, np.diag([1.1, 0.95, 1.05])), cp)
    np.testing.assert_allclose(ok["reg_scale"], [1.1, 0.95, 1.05], atol=1e-4)
    np.testing.assert_allclose(ok["reg_shear"], 0.0, atol=1e-6)
    c, s = np.cos(0.4), np.sin(0.4)  # a rotation is neither scale nor shear
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    np.testing.assert_allclose(checks.check_registration("x", _mat(tmp_path, rot * 1.2), cp)["reg_scale"], 1.2,
                               atol=1e-4)
    for matrix, pattern in (
        (np.diag([0.6, 1.0, 1.0]), r"x\.nii\.gz: register: affine to SRI24 scales axis x by 0\.60 \(expected 0\.75-"),
        (np.diag([1.0, 1.0, 1.5]), r"x\.nii\.gz: register: affine to SRI24 scales axis z by 1\.50"),
        (np.array([[1.0, 0.4, 0], [0, 1, 0], [0, 0, 1]]), r"x\.nii\.gz: register: affine to SRI24 shears by 0\.40"),
        (np.diag([-1.0, 1.0, 1.0]), r"x\.nii\.gz: register: affine to SRI24 mirrors the head \(determinant -1\.000"),
    ):
        with pytest.raises(ScanError, match=pattern):
            checks.check_registration("x.nii.gz", _mat(tmp_path, matrix), cp)
    with pytest.raises(ScanError, match=r"x: register: registration to SRI24 failed \(NCC 0\.140 .*< min_ncc_t1 0\.3"):
        checks.check_ncc("x", 0.14, 0.3)


def test_hdbet_on_a_stripped_brain_fails_naming_hdbet(shared_data, tmp_path, monkeypatch):
    """Declared a raw head, a stripped SRI24 brain gets HD-BET; a mask spilling onto the zero
    background (as HD-BET's did, issue #21) is named at hdbet, not at registration."""
    spgr = shared_data / "sri24-extras" / "spgr.nii.gz"

    def spilling(img, *a):  # the brain's support dilated by 8 mm: what a confused HD-BET returns
        from scipy import ndimage

        return ndimage.binary_dilation(img.numpy() > 0, iterations=8)

    monkeypatch.setattr(chain, "brain_mask", spilling)
    cfg = {"preprocess": {"n4": {"iterations": [5]}}, "seed": 0}
    r, rec = run_t1(tmp_path, spgr, Declared(skull_stripped=False), cfg)
    assert r["status"] == "failed"
    assert r["reason"].startswith(f"{spgr}: hdbet: ")  # measured: "brain mask covers 178% of the head"
    assert "% of the head (expected 20-95%)" in r["reason"] or "lies on zero background" in r["reason"]
    assert sorted(p.name for p in rec.parent.iterdir()) == [rec.name]


# --- flags: mapping keys and CLI ---------------------------------------------------------------
def test_mapping_and_cli_flags_parse_per_modality():
    d = declared_inputs({"skull_stripped": {"FLAIR": True}, "space": "SRI24"}, "m.yaml")
    assert d["FLAIR"] == Declared(True, "SRI24") and d["T1"] == Declared(None, "SRI24")
    for bad, words in (({"skull_stripped": "yes"}, "scans.skull_stripped.T1: expected true or false"),
                       ({"space": "MNI"}, "scans.space.T1: expected one of SRI24, native, got 'MNI'"),
                       ({"skull_stripped": {"PD": True}}, "scans.skull_stripped: unknown modality 'PD'")):
        with pytest.raises(ValueError, match=words):
            declared_inputs(bad, "m.yaml")
    got = parse_cli_flags(["yes", "FLAIR=no"], ["T1=SRI24"], ["T1", "FLAIR"])
    assert got == {"T1": Declared(True, "SRI24"), "FLAIR": Declared(False, None)}
    with pytest.raises(ValueError, match="no T2 scan given"):
        parse_cli_flags(["T2=yes"], [], ["T1"])
    from braing3n.metadata.discover import load_mapping

    m = load_mapping(str(REPO / "config" / "cohorts" / "brats2021.yaml"))
    assert set(declared_inputs(m["scans"], "brats2021").values()) == {Declared(True, "SRI24")}


def test_a_head_with_exact_zero_air_is_raw_by_its_size_not_stripped():
    """A bright scalp against exact-zero air ends in tissue like a stripped brain; its non-zero
    region (an ellipsoid of 90 x 110 x 100 mm semi-axes: 4,147 mL) is a head's size, not a brain's."""
    g = np.stack(np.meshgrid(*[np.arange(n) * 2.0 - n for n in (100, 120, 110)], indexing="ij"))
    r = np.sqrt((g[0] / 90) ** 2 + (g[1] / 110) ** 2 + (g[2] / 100) ** 2)
    data = np.where(r < 1.0, 500.0, 0.0) + np.where(r < 0.8, -200.0, 0.0)
    big = ants.from_numpy(data.astype(np.float32), spacing=(2.0, 2.0, 2.0))
    assert inputs.tissue_edge_fraction(big) == pytest.approx(1.0)
    stripped, why, frac = inputs.decide_stripped(Declared(), big)
    ml = float(why.split("non-zero region is ")[1].split(" mL")[0])
    assert not stripped and frac == pytest.approx(1.0) and ml == pytest.approx(4147, rel=0.02)
    small = ants.from_numpy(np.where(r < 0.6, 300.0 + 100.0 * r, 0.0).astype(np.float32), spacing=(2.0, 2.0, 2.0))
    assert inputs.decide_stripped(Declared(), small)[0]  # 0.6^3 x 4,147 = 896 mL: brain-sized
