"""Generator end to end on synthetic latents with planted effects: manifest -> engine -> sampler."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from braing3n.generate import load_generator, sample_latents
from braing3n.generate.tasks import build_task, make_dit_task
from braing3n.train.engine import TrainConfig, fit

torch.set_num_threads(1)
T, C = 12, 8  # tiny token grid 2x3x2 and 8 channels stand in for 10x12x10 x 32
EXTRA = {"preset": "tiny", "hidden": 64, "depth": 2, "heads": 4, "grid": [2, 3, 2], "drop_prob": 0.15}


def train_cfg(steps=300, **kw) -> TrainConfig:
    base = dict(steps=steps, batch_size=32, lr=2e-3, weight_decay=0.0, warmup_steps=10, ema_decay=0.99,
                ckpt_every=10_000, log_every=50, seed=0, num_workers=0, grad_clip=1.0, device="cpu", extra=EXTRA)
    return TrainConfig(**{**base, **kw})


def synthetic_cohort(tmp_path, n=170, seed=0):
    """Latents whose channel means carry disease (+/-1.5) and sex (channel 0: +/-1) effects."""
    rng = np.random.default_rng(seed)
    disease = rng.choice(["HC", "AD"], n)
    sex = rng.choice(["F", "M"], n)
    lat = 0.3 * rng.standard_normal((n, T, C)).astype(np.float32) + 5.0  # offset: normalisation must undo it
    lat += np.where(disease == "AD", 1.5, -1.5)[:, None, None]
    lat[:, :, 0] += np.where(sex == "F", 1.0, -1.0)[:, None]
    split = np.where(np.arange(n) < n - 10, "train", "test")
    disease[-1] = "GBM"  # only in the test split: must not enter the vocabulary
    lat[-10:] += 100.0  # test latents far off: must not enter the normalisation statistics
    ids = np.array([f"s{i:03d}" for i in range(n)])
    manifest = pd.DataFrame({"scan_id": ids, "subject_id": ids, "diagnosis": disease, "sex": sex,
                             "modality": "T1", "site": None, "idh1": None,
                             "age": rng.uniform(20, 80, n), "split": split})
    (tmp_path / "metadata").mkdir(parents=True)
    (tmp_path / "embeddings").mkdir()
    manifest.to_parquet(tmp_path / "metadata" / "manifest.parquet")
    np.savez(tmp_path / "embeddings" / "demo.npz", scan_id=ids, latent=lat)
    return {"results": str(tmp_path), "cohorts": {"demo": {"mapping": "x", "root": "y"}}}, lat, manifest


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dit")
    config, lat, manifest = synthetic_cohort(tmp)
    cfg = train_cfg()
    task = make_dit_task(config, cfg)
    fit(task, cfg, tmp / "models" / "dit")
    return tmp / "models" / "dit", lat, manifest, task


def test_vocabulary_and_normalisation_from_training_split_only(trained):
    model_dir, lat, manifest, task = trained
    meta = json.loads((model_dir / "generator.json").read_text())
    assert meta["vocabulary"]["categorical"]["disease"] == ["AD", "HC"]
    assert meta["vocabulary"]["categorical"]["site"] == []
    train = manifest["split"] == "train"
    np.testing.assert_allclose(meta["latent_norm"]["mean"], lat[train.to_numpy()].mean((0, 1)), atol=1e-4)
    assert meta["n_train"] == int(train.sum())
    gen = load_generator(model_dir, "cpu")
    with pytest.raises(ValueError, match="GBM.*not in the training data"):
        sample_latents(gen, {"disease": "GBM"}, n=1, steps=2)
    with pytest.raises(ValueError, match="unknown condition"):
        sample_latents(gen, {"diagnosis": "AD"}, n=1, steps=2)


def test_training_loss_falls(trained):
    model_dir = trained[0]
    m = pd.read_csv(model_dir / "metrics.csv")
    assert m["loss"].iloc[-1] < 0.5 * m["loss"].iloc[0]


def test_planted_condition_effects_move_in_requested_direction(trained):
    gen = load_generator(trained[0], "cpu")
    kw = dict(n=24, cfg_scale=1.0, steps=16, solver="heun", seed=0)
    ad = sample_latents(gen, {"disease": "AD", "sex": "F"}, **kw)
    hc = sample_latents(gen, {"disease": "HC", "sex": "F"}, **kw)
    m = sample_latents(gen, {"disease": "AD", "sex": "M"}, **kw)
    assert ad.shape == (24, T, C) and ad.dtype == torch.float32
    # planted: AD - HC = +3 on every channel; F - M = +2 on channel 0
    assert 2.3 < float(ad.mean() - hc.mean()) < 3.7
    assert 1.4 < float(ad[..., 0].mean() - m[..., 0].mean()) < 2.6
    assert abs(float(ad[..., 1:].mean() - m[..., 1:].mean())) < 0.5  # sex leaves other channels alone
    assert abs(float(ad[..., 1:].mean()) - 6.5) < 0.5  # 5 + 1.5: de-normalised to the data scale
    # guidance w > 1 extrapolates away from the unconditional mean: a larger AD-HC gap
    kw["cfg_scale"] = 3.0
    ad3, hc3 = (sample_latents(gen, {"disease": d, "sex": "F"}, **kw) for d in ("AD", "HC"))
    assert float(ad3.mean() - hc3.mean()) > float(ad.mean() - hc.mean()) + 0.05


def test_guidance_with_kept_conditions_guides_only_the_others(trained):
    gen = load_generator(trained[0], "cpu")
    kw = dict(n=24, steps=16, solver="heun", seed=0)
    f1, m1 = (sample_latents(gen, {"disease": "AD", "sex": s}, cfg_scale=1.0, **kw) for s in "FM")
    # unconditional branch = all unknown: at w = 7 the disease direction is extrapolated too, which
    # scatters the disease-only channels (1+) and dilutes the sex guidance (channel 0)
    f, m = (sample_latents(gen, {"disease": "AD", "sex": s}, cfg_scale=7.0, **kw) for s in "FM")
    # AD held in both branches: w guides sex only
    fk, mk = (sample_latents(gen, {"disease": "AD", "sex": s}, cfg_scale=7.0, keep={"disease": "AD"}, **kw)
              for s in "FM")
    gap = {k: float(a[..., 0].mean() - b[..., 0].mean()) for k, (a, b) in
           {"w1": (f1, m1), "free": (f, m), "keep": (fk, mk)}.items()}
    spread = {k: float(a[..., 1:].std()) for k, a in {"w1": f1, "free": f, "keep": fk}.items()}
    assert gap["keep"] > gap["free"] + 2.0 > gap["w1"] + 2.0, gap  # measured 10.9 vs 7.5 vs 1.8
    assert spread["keep"] < 0.7 * spread["free"], spread  # 0.31 vs 0.63
    assert abs(spread["keep"] - spread["w1"]) < 0.15 * spread["w1"], spread  # as unguided: 0.31 vs 0.32
    with pytest.raises(ValueError, match="must be part of the request"):
        sample_latents(gen, {"sex": "F"}, keep={"disease": "AD"}, **kw)


def test_same_seed_same_latents_any_batch_size(trained):
    gen = load_generator(trained[0], "cpu")
    a = sample_latents(gen, {"disease": "AD"}, n=5, steps=4, seed=3, batch_size=5)
    b = sample_latents(gen, {"disease": "AD"}, n=5, steps=4, seed=3, batch_size=2)
    c = sample_latents(gen, {"disease": "AD"}, n=5, steps=4, seed=4)
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(a, c)


def test_longitudinal_task_learns_progression():
    """Follow-up = baseline + 0.5 * years on channel 1: forecasts track the requested horizon."""
    rng = np.random.default_rng(1)
    n = 160
    base = rng.standard_normal((n, T, C)).astype(np.float32)
    years = rng.uniform(0, 4, n).astype(np.float32)
    follow = base + 0.05 * rng.standard_normal((n, T, C)).astype(np.float32)
    follow[..., 1] += 0.5 * years[:, None]
    rows = pd.DataFrame({"scan_id": [f"b{i}" for i in range(n)], "diagnosis": "HC", "sex": "F", "modality": "T1",
                         "age": 70.0, "years": years})
    task = build_task("dit_long", rows, follow, {**EXTRA, "drop_prob": 0.1}, 32, context=base)
    assert task.model_cfg.context_channels == C and "years" in task.vocab.continuous
    torch.manual_seed(0)
    model = task.build_model()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    batches = task.batches(0, 1, 0, 0)
    for _ in range(300):
        batch = next(batches)
        loss, _ = task.loss(model, batch, torch.device("cpu"))
        opt.zero_grad()
        loss.backward()
        opt.step()
    from braing3n.generate.sampler import generator_from_parts

    gen = generator_from_parts(model, task.metadata())
    ctx = torch.from_numpy(base[:8])
    kw = dict(n=8, cfg_scale=1.0, steps=12, seed=0, context=ctx)
    near = sample_latents(gen, {"years": 0.0, "age": 70}, **kw)
    far = sample_latents(gen, {"years": 4.0, "age": 70}, **kw)
    delta = (far - near).mean((0, 1))
    assert 1.0 < float(delta[1]) < 3.0  # planted: +2 on channel 1 over 4 years
    assert float(delta[[0, 2, 3]].abs().max()) < 0.5
    # the forecast keeps the subject's anatomy: closer to its own baseline than to another subject's
    own = (near - ctx).pow(2).mean()
    other = (near - ctx.roll(1, 0)).pow(2).mean()
    assert own < 0.5 * other
    with pytest.raises(ValueError, match="context"):
        sample_latents(gen, {"years": 1.0}, n=2, steps=2)


def test_dit_long_task_from_wide_pairs_table(tmp_path):
    """The metadata stage's wide pairs table (per-modality scan ids) -> training pairs of the train split."""
    from braing3n.generate.tasks import make_dit_long_task

    config, lat, manifest = synthetic_cohort(tmp_path, n=40)
    ids = manifest["scan_id"].tolist()
    wide = {"cohort": "demo", "subject_id": "x", "split": "train", "interval_years": [1.0, 2.5, 3.0, 0.5]}
    wide |= {f"{w}_scan_id_{m}": [None] * 4 for m in ("T1", "T2", "FLAIR", "T1c") for w in ("baseline", "followup")}
    wide["baseline_scan_id_T1"] = [ids[0], ids[2], ids[35], ids[4]]  # ids[35] is a test-split baseline
    wide["followup_scan_id_T1"] = [ids[1], ids[3], ids[36], "missing_scan"]  # no latent for the last
    wide["baseline_scan_id_FLAIR"], wide["followup_scan_id_FLAIR"] = [ids[5], None, None, None], [ids[6]] + [None] * 3
    (tmp_path / "metadata" / "pairs.parquet").unlink(missing_ok=True)
    pd.DataFrame(wide).to_parquet(tmp_path / "metadata" / "pairs.parquet")
    cfg = train_cfg(steps=2, batch_size=4)
    task = make_dit_long_task(config, cfg)
    assert len(task.target) == 3  # (0->1, T1), (2->3, T1), (5->6, FLAIR)
    np.testing.assert_allclose(task.conds["years"], [1.0, 2.5, 1.0])
    raw_target = task.norm.denormalise(task.target.astype(np.float32))
    np.testing.assert_allclose(raw_target[1], lat[3], atol=0.05)  # follow-up of pair 2 is scan 3
    path = fit(task, cfg, tmp_path / "models" / "dit_long")
    assert path.exists() and json.loads((path.parent / "generator.json").read_text())["kind"] == "dit_long"
