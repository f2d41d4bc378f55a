"""Model-input store: crop geometry, incremental store build, z-score, loader determinism."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from braing3n.atlas import AFFINE
from braing3n.atlas import SHAPE as ATLAS_SHAPE
from braing3n.data.geometry import MODEL_AFFINE, MODEL_SHAPE, OFFSET, crop_to_model, uncrop_to_atlas, write_atlas_nifti
from braing3n.data.loader import VolumeDataset, train_batches, zscore
from braing3n.data.store import build_store, read_index

torch.set_num_threads(1)


def test_crop_offsets_and_round_trip():
    assert OFFSET == (40, 24, -2)
    vol = np.random.default_rng(0).random(ATLAS_SHAPE, dtype=np.float32)
    small = crop_to_model(vol)
    assert small.shape == MODEL_SHAPE
    assert small[0, 0, 2] == vol[40, 24, 0] and small[159, 191, 156] == vol[199, 215, 154]
    assert not small[:, :, :2].any() and not small[:, :, 157:].any()  # z padding
    back = uncrop_to_atlas(small)
    assert np.array_equal(back[40:200, 24:216, :], vol[40:200, 24:216, :])
    assert not back[:40].any() and not back[:, 216:].any()
    # the model affine puts model voxel (i, j, k) at the world position of atlas voxel (i+40, j+24, k-2)
    ijk = np.array([5, 7, 9, 1.0])
    assert np.allclose(MODEL_AFFINE @ ijk, AFFINE @ (ijk + np.array([40, 24, -2, 0])))
    with pytest.raises(ValueError, match="expected an atlas-grid"):
        crop_to_model(np.zeros((10, 10, 10)))


def test_write_atlas_nifti_overlays(tmp_path):
    vol = np.zeros(MODEL_SHAPE, np.float32)
    vol[80, 100, 70] = 5.0
    img = nib.load(write_atlas_nifti(vol, tmp_path / "x.nii.gz"))
    assert img.shape == ATLAS_SHAPE and np.allclose(img.affine, AFFINE)
    data = np.asarray(img.dataobj)
    world = MODEL_AFFINE @ np.array([80, 100, 70, 1.0])
    ijk = np.round(np.linalg.inv(img.affine) @ world).astype(int)[:3]
    assert data[tuple(ijk)] == 5.0 and data.sum() == 5.0


def _scan(path, value: float, shape=ATLAS_SHAPE):
    data = np.zeros(shape, np.int16)
    data[60:180, 50:200, 10:130] = value
    data[100:120, 100:120, 60:80] = 2 * value
    nib.save(nib.Nifti1Image(data, AFFINE), path)  # uncompressed: fast to write in a test
    return str(path)


def test_store_build_incremental_and_failures(tmp_path):
    raw = tmp_path / "pre"
    raw.mkdir()
    qc = pd.DataFrame({
        "scan_id": ["c_a", "c_b", "c_bad", "c_fail"],
        "status": ["ok", "ok", "ok", "failed"],
        "atlas_path": [_scan(raw / "a.nii", 100), _scan(raw / "b.nii", 300), _scan(raw / "bad.nii", 1, (64, 64, 64)),
                       str(raw / "missing.nii")],
    })
    qc.to_parquet(tmp_path / "qc.parquet")
    out = tmp_path / "store" / "c" / "index.parquet"
    index = build_store(tmp_path / "qc.parquet", out, "c")
    status = dict(zip(index.scan_id, index.status, strict=True))
    assert status == {"c_a": "ok", "c_b": "ok", "c_bad": "failed", "c_fail": "failed"}
    assert "is not the SRI24 grid" in index.set_index("scan_id").loc["c_bad", "reason"]
    arr = np.load(out.parent / "c_a.npy", mmap_mode="r")
    assert arr.dtype == np.float16 and arr.shape == MODEL_SHAPE
    assert np.array_equal(arr, crop_to_model(np.asarray(nib.load(raw / "a.nii").dataobj)).astype(np.float16))
    row = index.set_index("scan_id").loc["c_a"]
    brain = np.asarray(arr, np.float64)[arr > 0]
    assert abs(row["mean"] - brain.mean()) < 1e-3 and row["n_brain"] == brain.size
    assert sorted(p.name for p in out.parent.glob("*.npy")) == ["c_a.npy", "c_b.npy"]
    # rerun: unchanged sources are not rewritten; a changed source is; a dropped scan's file goes
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.parent.glob("*.npy")}
    _scan(raw / "b.nii", 400)
    os.utime(raw / "b.nii", ns=(1, 2))
    build_store(tmp_path / "qc.parquet", out, "c")
    assert (out.parent / "c_a.npy").stat().st_mtime_ns == mtimes["c_a.npy"]
    assert float(np.load(out.parent / "c_b.npy").max()) == 800.0
    qc[qc.scan_id != "c_a"].to_parquet(tmp_path / "qc.parquet")
    build_store(tmp_path / "qc.parquet", out, "c")
    assert sorted(p.name for p in out.parent.glob("*.npy")) == ["c_b.npy"]
    ok = read_index([out])
    assert list(ok.scan_id) == ["c_b"] and os.path.isabs(ok.path[0])
    # QC outliers stay in by default and leave with store.exclude_outliers
    qc["outlier"] = qc.scan_id == "c_b"
    qc.to_parquet(tmp_path / "qc.parquet")  # c_a is back, c_b is an outlier
    index = build_store(tmp_path / "qc.parquet", out, "c", exclude_outliers=True)
    assert index.set_index("scan_id").loc["c_b", "reason"].startswith("QC outlier")
    assert sorted(p.name for p in out.parent.glob("*.npy")) == ["c_a.npy"]


def test_store_counts_brain_voxels_the_model_crop_cuts_off(tmp_path):
    inside = _scan(tmp_path / "in.nii", 100)  # the box lies within the 160x192x160 crop
    data = np.asarray(nib.load(inside).dataobj).copy()
    data[0:10, 100:110, 60:70] = 50  # 1,000 voxels left of the crop (atlas x < 40)
    nib.save(nib.Nifti1Image(data, AFFINE), tmp_path / "out.nii")
    qc = pd.DataFrame({"scan_id": ["c_in", "c_out"], "status": ["ok", "ok"],
                       "atlas_path": [inside, str(tmp_path / "out.nii")]})
    qc.to_parquet(tmp_path / "qc.parquet")
    index = build_store(tmp_path / "qc.parquet", tmp_path / "s" / "index.parquet", "c").set_index("scan_id")
    assert index.loc["c_in", "n_brain_outside_crop"] == 0 and index.loc["c_out", "n_brain_outside_crop"] == 1000
    assert index.loc["c_out", "n_brain"] == index.loc["c_in", "n_brain"]  # the stored (cropped) brain is the same


def test_zscore_brain_only():
    v = torch.zeros(2, 1, 8, 8, 8, dtype=torch.float16)
    v[0, 0, 2:6, 2:6, 2:6] = torch.arange(64, dtype=torch.float16).reshape(4, 4, 4) + 10
    v[1, 0, 1:7, 1:7, 1:7] = 500.0
    v[1, 0, 3, 3, 3] = 900.0
    z = zscore(v)
    for b in range(2):
        brain = z[b][v[b] != 0]
        assert abs(float(brain.mean())) < 1e-5 and abs(float(brain.std(unbiased=False)) - 1) < 1e-4
        assert float(z[b][v[b] == 0].abs().max()) == 0.0


def test_train_batches_deterministic_and_resumable(tmp_path):
    paths = []
    for i in range(5):
        p = tmp_path / f"s{i}.npy"
        np.save(p, np.full(MODEL_SHAPE, i + 1, np.float16))
        paths.append(str(p))
    ds = VolumeDataset(pd.DataFrame({"scan_id": [f"s{i}" for i in range(5)], "path": paths}))
    torch.manual_seed(0)
    expect = torch.rand(3)
    torch.manual_seed(0)
    it = train_batches(ds, 2, 0, 1, seed=3, start_step=0, num_workers=0)
    next(iter(train_batches(ds, 2, 0, 1, seed=3, start_step=5, num_workers=0)))
    assert torch.equal(torch.rand(3), expect)  # starting to iterate draws nothing from the global RNG
    seq = [next(it)[:, 0, 0, 0, 0].tolist() for _ in range(4)]
    again = train_batches(ds, 2, 0, 1, seed=3, start_step=2, num_workers=0)
    assert [next(again)[:, 0, 0, 0, 0].tolist() for _ in range(2)] == seq[2:]
    assert sorted(seq[0] + seq[1] + [seq[2][0]]) == [1, 2, 3, 4, 5]  # one epoch = a permutation
    assert next(it).dtype == torch.float16
