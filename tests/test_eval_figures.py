"""The report's pictures (`braing3n evaluate figures`) on small synthetic volumes: the intensity
window is the 1st-99th percentile of the real scan's brain voxels (not the z-score range, not the
generated samples' range), real, reconstruction and generated panels of an arm share it, the error
map has its own 0..99th-percentile window, and the figures have the sizes their layout gives."""

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from braing3n.evaluate import figures

SHAPE = (16, 20, 16)


def _mask() -> np.ndarray:
    m = np.zeros(SHAPE, bool)
    m[3:13, 4:16, 3:13] = True  # 1200 voxels
    return m


def _real(seed: int = 0) -> np.ndarray:
    """Brain voxels 1..1200 in shuffled order (percentiles known), a bright rim outside the mask."""
    rng = np.random.default_rng(seed)
    vol = np.zeros(SHAPE, np.float32)
    m = _mask()
    vol[m] = rng.permutation(np.arange(1, 1201, dtype=np.float32))
    vol[0, :, :] = 5000.0  # outside the mask: must not widen the window
    return vol


def test_window_is_the_real_brains_1st_to_99th_percentile():
    vol, mask = _real(), _mask()
    lo, hi = figures.brain_window(vol, mask)
    # linear-interpolated percentiles of 1..1200: 1 + 0.01 * 1199 and 1 + 0.99 * 1199
    assert lo == pytest.approx(12.99) and hi == pytest.approx(1188.01)
    assert (lo, hi) != (float(vol.min()), float(vol.max()))
    vol[mask & (vol < 600)] = 0  # background (z = 0) inside the mask is not brain
    assert figures.brain_window(vol, mask)[0] == pytest.approx(600 + 0.01 * 600)
    with pytest.raises(ValueError, match="blank.npy: no nonzero voxel"):
        figures.brain_window(np.zeros(SHAPE), mask, "blank.npy")


def test_slices_pass_through_one_point_in_the_three_planes():
    vol = np.zeros(SHAPE)
    vol[5, 7, 9] = 1.0
    axial, coronal, sagittal = figures.slices_through(vol, (5, 7, 9))
    assert axial.shape == (20, 16) and coronal.shape == (16, 16) and sagittal.shape == (16, 20)
    assert axial.sum() == coronal.sum() == sagittal.sum() == 1.0
    assert figures.centre_of(_mask()) == (8, 10, 8)  # box 3..12, 4..15, 3..12: centres 7.5, 9.5, 7.5 round up


def test_real_reconstruction_and_generated_share_the_real_scans_window(tmp_path):
    mask = _mask()
    arms = []
    for a in range(3):
        real = _real(a) * (a + 1)
        vols = [("real", real, True), ("reconstruction", real * 0.9, False)]
        vols += [(f"generated {k}", np.full(SHAPE, 40.0 * (k + 1) * (a + 3)), False) for k in range(3)]
        arms.append({"title": f"sex={'FM'[a % 2]}{a}", "volumes": vols, "window": figures.brain_window(real, mask)})
    out = tmp_path / "samples_vs_real.png"
    drawn = figures.plot_samples_vs_real(arms, mask, out)
    assert len(drawn) == 3 * 5 * 3  # arms x columns x planes
    for a, arm in enumerate(arms):
        windows = {d["window"] for d in drawn if d["arm"] == arm["title"]}
        assert len(windows) == 1 and tuple(windows.pop()) == pytest.approx((12.99 * (a + 1), 1188.01 * (a + 1)))
        labels = [d["label"] for d in drawn if d["arm"] == arm["title"] and d["plane"] == "axial"]
        assert labels == ["real", "reconstruction", "generated 0", "generated 1", "generated 2"]
    w, h = figures.samples_figure_size(3, 5)
    assert (w, h) == pytest.approx((2 * 5 * 1.5 + 0.3, 2 * 3.35 * 1.5))
    png = mpimg.imread(out)
    assert png.shape[:2] == (round(h * figures.DPI), round(w * figures.DPI)) == (804, 1224)


def test_reconstruction_figure_real_recon_one_window_error_its_own(tmp_path):
    mask = _mask()
    scans = []
    for s in range(2):
        real = _real(s)
        recon = real + np.where(mask, 0.5 + s, 0.0)  # |error| 0.5 in scan 0, 1.5 in scan 1
        scans.append({"title": f"c1_s{s}_1_T1 (test)", "real": real, "recon": recon})
    out = tmp_path / "reconstructions.png"
    drawn = pd.DataFrame(figures.plot_reconstructions(scans, mask, out))
    assert len(drawn) == 2 * 3 * 3
    assert drawn["scan"].nunique() == 2
    for _, grp in drawn.groupby("scan"):
        gray = set(grp.loc[grp["group"] != "|error|", "window"])
        assert len(gray) == 1 and tuple(gray.pop()) == pytest.approx((12.99, 1188.01))
    # the error window: 0 to the 99th percentile of both scans' brain errors (half 0.5, half 1.5)
    assert set(drawn.loc[drawn["group"] == "|error|", "window"]) == {(0.0, 1.5)}
    assert mpimg.imread(out).shape[:2] == (round(2 * (1.5 + 0.3) * 80), round(9 * 1.5 * 80)) == (288, 1080)


def test_pick_scans_takes_held_out_scans_first_in_scan_order():
    rows = pd.DataFrame({"scan_id": ["a", "b", "c", "d", "e"], "split": ["train", "test", "train", "val", "test"]})
    assert figures.pick_scans(rows)["scan_id"].tolist() == ["b", "d", "e", "a", "c"]
    assert figures.pick_scans(rows.drop(columns="split"))["scan_id"].tolist() == ["a", "b", "c", "d", "e"]
