"""Block-mean grids (fine scans to ~1 mm, N4's working grid) and the preprocessing benchmark's helpers."""

import json

import ants
import nibabel as nib
import numpy as np
import pytest

from braing3n.bench import preprocess as bench
from braing3n.preprocess import chain, n4, qc, resample
from braing3n.preprocess.cli import process


def ramp_image(shape=(37, 40, 23), spacing=(0.5, 0.47, 0.9)):
    """A linear ramp in world mm, on an oblique-free LPS grid with an origin offset."""
    img = ants.from_numpy(np.zeros(shape, np.float32), origin=(10.0, -20.0, 5.0), spacing=spacing)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).astype(np.float64)
    world = idx * np.asarray(spacing) + np.asarray(img.origin)
    return img.new_image_like((world @ np.array([1.0, -2.0, 0.5])).astype(np.float32))


def test_shrink_keeps_world_positions_and_factors_follow_the_voxel_size():
    img = ramp_image()
    f = resample.block_factors(img.spacing, 1.0, resample.FINE_MM)
    assert f == (2, 2, 1)  # 0.9 mm is not finer than 0.75 mm: left alone
    assert resample.block_factors((0.9, 0.9, 5.5), 4.0) == (4, 4, 1)  # N4's grid: ~4 mm on every axis
    small = resample.shrink(img, f)
    assert small.shape == (19, 20, 23) and np.allclose(small.spacing, (1.0, 0.94, 0.9))
    # a block mean of a linear ramp is the ramp at the block centre: the new origin is exact
    val = small.numpy()
    for i, j, k in [(0, 0, 0), (5, 7, 11), (17, 19, 22)]:  # full blocks (the last partial block differs)
        world = np.asarray(small.origin) + np.asarray(small.spacing) * (i, j, k)
        assert val[i, j, k] == pytest.approx(world @ np.array([1.0, -2.0, 0.5]), abs=1e-3)
    # expand_linear inverts onto the fine grid exactly for a ramp, away from the edge blocks
    back = resample.expand_linear(val, f, img.shape)
    assert back.shape == img.shape
    np.testing.assert_allclose(back[1:-3, 1:-3], img.numpy()[1:-3, 1:-3], atol=1e-3)
    near = resample.expand_nearest(val, f, img.shape)
    assert near.shape == img.shape and near[3, 3, 4] == val[1, 1, 4]


def test_despike_restores_a_head_carrying_extreme_voxels():
    rng = np.random.default_rng(0)
    data = rng.normal(100, 5, (40, 40, 40)).astype(np.float32)
    data[:, :, :5] = 0
    odd = data.copy()
    idx = rng.choice(data.size, 20, replace=False)
    odd.flat[idx[:10]], odd.flat[idx[10:]] = 230.0, -120.0  # what the reader's fence leaves of 1e7 / -1e7
    out = n4.despike(ants.from_numpy(odd)).numpy()
    assert np.abs(out - data).max() < 20  # every spike replaced by its neighbourhood's median
    same = n4.despike(ants.from_numpy(data)).numpy()
    np.testing.assert_array_equal(same, data)  # nothing changes on a clean head


def test_fine_voxel_input_is_averaged_to_1mm_before_n4():
    """An ellipsoid head at 0.5 mm: the chain's native image is on the 1 mm grid (shape, spacing,
    same world box), and N4 sees an ~8 mm working grid."""
    from tests.test_preprocess_faults import ellipsoid_head

    data, aff = ellipsoid_head(shape=(60, 72, 60), spacing=3.0)
    coarse = ants.from_numpy(data, spacing=(3.0, 3.0, 3.0))
    fine = ants.resample_image(coarse, (0.5, 0.5, 0.5), use_voxels=False, interp_type=0)
    img = resample.to_working_resolution(fine, 1.0)
    assert img.shape == tuple(-(-n // 2) for n in fine.shape) and np.allclose(img.spacing, 1.0)
    assert np.allclose(np.asarray(img.origin) - np.asarray(fine.origin), 0.25)  # centre of a 2-voxel block
    assert n4.working_grid(img) == (8, 8, 8)


@pytest.mark.slow
def test_a_fine_scan_comes_out_like_the_1mm_scan(shared_data, tmp_path):
    """IXI174 upsampled to 1 mm and to 0.5 mm (the size of a fine clinical head): the 0.5 mm one is
    averaged to 1 mm before N4/HD-BET (native N4 file at 1 mm) and its atlas-space output matches
    the 1 mm run's. Measured atlas NCC 0.970 between the two (2026-12-08): block means of a linear
    upsampling are not the 1 mm voxels, and the affine registration moves with such small input
    differences (20 despiked voxels of IXI174 alone give 0.989); bounds below that, not 0.99."""
    from braing3n.preprocess.io import load_nifti, to_ants

    src = to_ants(load_nifti(shared_data / "ixi-t1-2mm" / "IXI174-HH-1571_T1.nii.gz"))
    outs = {}
    for mm in (1.0, 0.5):
        up = ants.resample_image(src, (mm,) * 3, use_voxels=False, interp_type=0)
        raw = tmp_path / f"up{mm}.nii.gz"
        ants.image_write(up, str(raw))
        rec = tmp_path / str(mm) / "sub-S1_ses-01_T1_qc.json"
        r = process("t1", str(raw), str(rec), "coh", "S1", "01", "T1", {"preprocess": {}, "seed": 0})
        assert r["status"] == "ok", r["reason"]
        native = nib.load(str(rec.parent / r["outputs"]["native_n4"]))
        if mm == 0.5:
            assert np.allclose(native.header.get_zooms(), 1.0, atol=1e-4), native.header.get_zooms()
            assert all(abs(a - -(-b // 2)) <= 1 for a, b in zip(native.shape, up.shape, strict=True))
        outs[mm] = {k: np.asanyarray(nib.load(str(rec.parent / r["outputs"][k])).dataobj) for k in
                    ("volume", "brain_mask")}
        outs[mm]["qc"] = json.loads(rec.read_text())["qc"]
    both = (outs[1.0]["volume"] > 0) | (outs[0.5]["volume"] > 0)
    ncc = qc.ncc(outs[1.0]["volume"], outs[0.5]["volume"], both)
    dice = qc.dice(outs[1.0]["brain_mask"] > 0, outs[0.5]["brain_mask"] > 0)
    assert ncc >= 0.96 and dice >= 0.97, (ncc, dice)


def test_bench_field_error_and_child_memory(tmp_path):
    inside = np.ones((10, 10, 10), bool)
    a = np.full((10, 10, 10), 2.0)
    b = a * 3.0  # a constant factor is no error (N4's field is defined up to one)
    assert bench.field_error(a, b, inside) == (0.0, 0.0)
    c = a.copy()
    c[:5] *= 1.1
    mean, p99 = bench.field_error(c, a, inside)
    assert 4.5 < mean < 5.5 and 4.5 < p99 < 5.5
    # the child's peak RSS counts what it allocates (400 MB here), not the parent's later work
    out = bench.in_child(lambda: {"n": int(np.ones(50_000_000).sum())})
    assert out["ok"] and out["n"] == 50_000_000 and out["peak_rss_mb"] >= 400
    err = bench.in_child(lambda: {"x": 1 / 0})
    assert not err["ok"] and err["error"].startswith("ZeroDivisionError")
    path = bench.make_large(tmp_path, shape=(96, 96, 80), mm=2.4) if (bench.LARGE_SOURCE).exists() else None
    if path:
        img = nib.load(path)
        assert img.shape == (96, 96, 80) and np.allclose(img.header.get_zooms(), 2.4)
        assert chain.ChainParams().working_mm == 1.0
