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


def test_reconstruction_metrics_known_values_inside_the_brain():
    from braing3n.tokenizer.reconstruct import reconstruction_metrics

    rng = np.random.default_rng(0)
    vol = np.zeros((48, 48, 48))
    vol[10:38, 10:38, 10:38] = rng.uniform(0.5, 1.5, (28, 28, 28))  # ~20% brain, z-score-like, 0 outside
    same = reconstruction_metrics(vol, vol.copy())
    assert same["l1"] == 0 and same["psnr"] == np.inf and same["ssim"] == pytest.approx(1.0)
    off = reconstruction_metrics(vol, np.where(vol != 0, vol + 0.1, 0.0))
    span = vol[vol != 0].max() - vol[vol != 0].min()
    assert off["l1"] == pytest.approx(0.1) and off["psnr"] == pytest.approx(10 * np.log10(span**2 / 0.01))
    assert off["l1_volume"] == pytest.approx(0.1 * (vol != 0).mean())
    # a blank output gets nothing for the background it "reconstructs" (whole-volume SSIM: ~0.8)
    blank = reconstruction_metrics(vol, np.zeros_like(vol))
    assert blank["ssim"] < 0.05 and blank["l1"] == pytest.approx(np.abs(vol[vol != 0]).mean())
    assert reconstruction_metrics(vol, rng.uniform(0, 1.5, vol.shape))["ssim"] < 0.2
    assert np.isnan(reconstruction_metrics(np.zeros_like(vol), vol)["psnr"])  # no brain: NaN, not inf


def test_eval_scans_are_spread_over_cohorts_and_subjects():
    from braing3n.tokenizer.reconstruct import pick_eval_scans

    rows = [{"scan_id": f"a_s{i}_{m}", "cohort": "a", "subject_id": f"a:{i}"} for i in range(3) for m in ("T1", "T2")]
    rows += [{"scan_id": f"b_s{i}_T1", "cohort": "b", "subject_id": f"b:{i}"} for i in range(5)]
    index = pd.DataFrame(rows)
    picked = pick_eval_scans(index, 4, seed=0)
    assert len(picked) == 4 and picked["subject_id"].is_unique
    assert picked["cohort"].value_counts().to_dict() == {"a": 2, "b": 2}
    assert picked["scan_id"].is_monotonic_increasing and picked.equals(pick_eval_scans(index, 4, seed=0))
    assert len(pick_eval_scans(index, 8, seed=1)["subject_id"].unique()) == 8  # every subject before a 2nd scan
    assert len(pick_eval_scans(index, 50, seed=0)) == len(index)
