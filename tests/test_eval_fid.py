"""FID and memorisation with known answers."""

import numpy as np
import pytest

from braing3n.evaluate.fid import decomposed_fid, fid, fid_with_ci
from braing3n.evaluate.memorisation import memorisation


def test_fid_of_a_set_with_itself_is_zero_and_shift_follows_closed_form():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 8))
    assert fid(a, a) == pytest.approx(0.0, abs=1e-6)
    for shift in (0.5, 1.0, 3.0):
        delta = np.full(8, shift)
        # same covariance, mean moved by delta: FID = |delta|^2 exactly
        assert fid(a + delta, a) == pytest.approx(8 * shift**2, rel=1e-5)
    # scaling the covariance by s^2 (one dim): trace term (s-1)^2 * var
    b = a.copy()
    b[:, 0] *= 2.0
    assert fid(b, a) == pytest.approx(np.var(a[:, 0], ddof=1), rel=0.02)  # exact only for a diagonal sample covariance


def test_fid_bootstrap_interval_and_decomposition():
    rng = np.random.default_rng(1)
    real = rng.normal(size=(60, 4))
    recon = real + rng.normal(0, 0.1, real.shape)
    gen = rng.normal(size=(60, 4)) + 2.0
    point, lo, hi = fid_with_ci(gen, real, n_boot=50, seed=0)
    assert lo <= point <= hi and 10 < point < 22  # ~ |2 * 1_4|^2 = 16
    tab = decomposed_fid({"sex=F": {"real": real, "reconstruction": recon, "generated": gen},
                          "sex=M": {"real": real, "generated": gen[:1]}}, "mae_encoder", n_boot=20, seed=0)
    f = tab[tab.arm == "sex=F"].set_index("comparison")["fid"]
    assert f["reconstruction vs real"] < 0.2 < f["generated vs reconstruction"]
    skipped = tab[(tab.arm == "sex=M") & (tab.status == "skipped")]
    assert len(skipped) == 3 and "generated n=1" in skipped.iloc[0]["reason"]
    assert set(tab["extractor"]) == {"mae_encoder"}
    few = fid(rng.normal(size=(3, 50)), rng.normal(size=(4, 50)))  # n << d: still finite
    assert np.isfinite(few) and few > 0
    with pytest.raises(ValueError, match="equal d"):
        fid(real, real[:, :2])


def test_memorisation_flags_an_exact_copy_only():
    rng = np.random.default_rng(2)
    train = rng.normal(size=(100, 16))
    heldout = rng.normal(size=(50, 16))
    gen = rng.normal(size=(20, 16))
    gen[3] = train[42]  # exact copy
    ids = [f"scan{i}" for i in range(100)]
    table, summary = memorisation(gen, train, heldout, ids, quantile=0.01)
    assert table.loc[3, "near_copy"] and table.loc[3, "nearest_train_scan"] == "scan42"
    assert table.loc[3, "distance"] == pytest.approx(0.0, abs=1e-9)
    assert summary["n_near_copies"] == 1 and table["near_copy"].sum() == 1
    # all generated samples copied from training -> clearly closer than held-out scans
    _, s2 = memorisation(train[:20] + 1e-3, train, heldout, ids)
    assert s2["fraction_near_copies"] == 1.0 and s2["p_generated_closer"] < 1e-6


def test_fid_interval_holds_its_point_and_resamples_subjects():
    # two sets from one distribution, few samples in many dims: every plain percentile draw lies above
    # the point (duplicated rows shrink the covariance); the interval must still hold the point
    for seed in range(6):
        rng = np.random.default_rng(seed)
        a, b = rng.normal(size=(16, 16)), rng.normal(size=(8, 16))
        point, lo, hi = fid_with_ci(a, b, n_boot=100, seed=seed)
        assert 0 <= lo <= point <= hi, (seed, point, lo, hi)
    # 12 subjects with 3 near-identical scans each: the subject is the unit, so the interval is wider
    # than one that treats the 36 scans as independent
    rng = np.random.default_rng(7)
    subj = np.repeat(np.arange(12), 3)
    real = rng.normal(size=(12, 4))[subj] + rng.normal(0, 0.05, (36, 4))
    gen = rng.normal(size=(400, 4)) + 1.0  # many samples: the real set's resampling dominates the spread
    _, lo_scan, hi_scan = fid_with_ci(gen, real, n_boot=200, seed=0)
    _, lo_subj, hi_subj = fid_with_ci(gen, real, n_boot=200, seed=0, groups_b=subj)
    assert hi_subj - lo_subj > 1.3 * (hi_scan - lo_scan)
    # reconstruction vs real: the same scans, drawn together - a perfect reconstruction has [0, 0]
    point, lo, hi = fid_with_ci(real, real.copy(), n_boot=50, seed=0, groups_a=subj, paired=True)
    assert point == pytest.approx(0, abs=1e-6) and hi == pytest.approx(0, abs=1e-6)
    _, _, hi_unpaired = fid_with_ci(real, real.copy(), n_boot=50, seed=0, groups_a=subj, groups_b=subj)
    assert hi_unpaired > 0.05
