"""Guidance-sweep scoring and longitudinal metrics with known answers."""

import numpy as np
import pandas as pd
import pytest

from braing3n.evaluate.guidance import guidance_table, latent_features, plot_guidance, score_requests
from braing3n.evaluate.longitudinal import age_progression, change_localisation, latent_errors, voxel_errors


def test_latent_features_pool_the_token_grid():
    lat = np.arange(2 * 1200 * 3, dtype=np.float32).reshape(2, 1200, 3)
    f = latent_features(lat, pool=2)
    assert f.shape == (2, 5 * 6 * 5 * 3)
    grid = lat.reshape(2, 10, 12, 10, 3)
    np.testing.assert_allclose(f[0, :3], grid[0, :2, :2, :2].mean(axis=(0, 1, 2)))
    assert latent_features(lat, pool=1).shape == (2, 3600)
    with pytest.raises(ValueError, match="1000 tokens"):
        latent_features(lat[:, :1000])


def test_score_requests_known_values():
    s = score_requests("classification", np.array(["F", "F", "M", "M"]), np.array(["F", "M", "M", "M"]))
    assert s == {"accuracy": 0.75, "balanced_accuracy": 0.75}
    r = score_requests("regression", np.array([20.0, 40, 60]), np.array([25.0, 45, 65]))
    assert r["mae"] == 5.0 and r["pearson_r"] == pytest.approx(1.0)


def test_guidance_table_recovers_planted_condition_and_degrades(tmp_path):
    rng = np.random.default_rng(0)
    n = 80
    real = pd.DataFrame({"subject_id": [f"s{i}" for i in range(n)], "sex": np.where(np.arange(n) % 2, "M", "F"),
                         "age": rng.uniform(20, 80, n)})
    x_real = rng.normal(size=(n, 5))
    x_real[:, 0] += 3 * (real["sex"] == "M")
    x_real[:, 1] += (real["age"] - 50) / 10
    rows, feats = [], []
    for scale, strength in ((1.0, 3.0), (4.0, 0.0)):  # at scale 4 the 'generator' ignores the request
        for sex in ("F", "M"):
            f = rng.normal(size=(20, 5))
            f[:, 0] += strength * (sex == "M")
            rows += [{"condition": "sex", "value": sex, "cfg_scale": scale}] * 20
            feats.append(f)
        ages = rng.uniform(20, 80, 20)
        f = rng.normal(size=(20, 5))
        f[:, 1] += (strength / 3) * (ages - 50) / 10
        rows += [{"condition": "age", "value": a, "cfg_scale": scale} for a in ages]
        feats.append(f)
    conds = {"sex": {"column": "sex", "kind": "classification"}, "age": {"column": "age", "kind": "regression"}}
    tab = guidance_table(pd.DataFrame(rows), np.concatenate(feats), real, x_real, conds, seed=0)
    t = tab.set_index(["condition", "cfg_scale"])
    assert t.loc[("sex", "real"), "accuracy"] > 0.85 and t.loc[("sex", "real"), "real_counts"] == "F:40 M:40"
    assert t.loc[("sex", "1.0"), "accuracy"] > 0.85 and t.loc[("sex", "4.0"), "accuracy"] < 0.75
    assert t.loc[("age", "1.0"), "pearson_r"] > 0.65 and abs(t.loc[("age", "4.0"), "pearson_r"]) < 0.5
    plot_guidance(tab, str(tmp_path / "g.png"))
    assert (tmp_path / "g.png").stat().st_size > 1000


def test_longitudinal_metrics_known_answers():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(4, 1200, 8))
    follow = base + 0.5
    lat = latent_errors(follow + 0.1, follow, base)
    np.testing.assert_allclose(lat["latent_mae"], 0.1)
    np.testing.assert_allclose(lat["latent_mae_no_change"], 0.5)
    vols_b = np.zeros((2, 4, 4, 4))
    vols_f = vols_b + 1.0
    mask = np.ones((4, 4, 4), bool)
    vox = voxel_errors(vols_f, vols_f + 0.25, vols_b, mask)
    np.testing.assert_allclose(vox["voxel_l1"], 0.25)
    np.testing.assert_allclose(vox["voxel_l1_no_change"], 1.25)
    labels = np.full((10, 10, 10), 2)
    labels[:2] = 1  # CSF = 20% of brain
    labels[-1] = 0  # background
    change = np.zeros_like(labels, float)
    change[:2] = 1.0  # all change in CSF
    loc = change_localisation(change, np.zeros_like(change), labels)
    assert loc["change_fraction_csf_ventricles"] == 1.0
    assert loc["volume_fraction_csf_ventricles"] == pytest.approx(200 / 900)
    assert loc["change_enrichment_csf_ventricles"] == pytest.approx(4.5)
    years = np.array([1.0, 2, 3, 4, 5])
    prog = age_progression(years, np.full(5, 60.0), 60 + 0.8 * years)
    assert prog["age_change_pearson_r"] == pytest.approx(1.0) and prog["age_change_slope"] == pytest.approx(0.8)


def test_recon_metrics_known_values():
    from braing3n.evaluate.tokcompare import recon_metrics

    rng = np.random.default_rng(0)
    vol = rng.uniform(0, 1, (24, 24, 24))
    mask = np.ones(vol.shape, bool)
    same = recon_metrics(vol, vol.copy(), mask)
    assert same["l1"] == 0 and same["psnr"] == np.inf and same["ssim"] == pytest.approx(1.0)
    off = recon_metrics(vol, vol + 0.1, mask)
    rng_ = vol.max() - vol.min()
    assert off["l1"] == pytest.approx(0.1) and off["psnr"] == pytest.approx(10 * np.log10(rng_**2 / 0.01))
    assert recon_metrics(vol, rng.uniform(0, 1, vol.shape), mask)["ssim"] < 0.2
