"""AutoencoderKL baseline: shapes on the model grid, loss, two engine steps, reload and encode."""

import torch

from braing3n.models.aekl import AEKLConfig, AEKLTask, aekl_loss, build_aekl, encode_tokens, load_aekl
from braing3n.train.engine import fit, train_config

torch.set_num_threads(2)
TINY = AEKLConfig(latent_channels=4, channels=(4, 4, 4, 4, 4), num_res_blocks=1)


def test_aekl_latent_is_the_mae_token_grid_and_loss_is_finite():
    torch.manual_seed(0)
    model = build_aekl(TINY)
    tokens = encode_tokens(model, torch.randn(1, 1, 160, 192, 160))
    assert tokens.shape == (1, 1200, 4)  # 5 levels: /16 per axis = 10x12x10
    loss, parts = aekl_loss(model, torch.randn(2, 1, 32, 32, 32), kl_weight=1e-3)
    assert torch.isfinite(loss) and parts["l1"] > 0 and parts["kl"] >= 0


def test_aekl_trains_with_the_shared_engine_and_reloads(tmp_path):
    # a small in-memory dataset: the model is fully convolutional, the engine only iterates it
    gen = torch.Generator().manual_seed(0)
    dataset = [(torch.rand(1, 32, 32, 32, generator=gen) * 100).half() for _ in range(2)]
    config = {"seed": 0, "device": "cpu", "results": str(tmp_path),
              "train": {"engine": {"steps": 2, "batch_size": 1, "lr": 1e-3, "warmup_steps": 0, "ckpt_every": 2,
                                   "log_every": 1, "num_workers": 0, "grad_clip": 1.0, "ema_decay": 0.0},
                        "aekl": {}}}
    cfg = train_config(config, "aekl")
    task = AEKLTask(TINY, dataset, cfg)
    fit(task, cfg, tmp_path / "aekl_4")
    model, loaded = load_aekl(str(tmp_path / "aekl_4"))
    assert loaded.latent_channels == 4 and tuple(loaded.channels) == TINY.channels
    tokens = encode_tokens(model, torch.randn(1, 1, 32, 32, 32))
    assert tokens.shape == (1, 8, 4) and torch.isfinite(tokens).all()
    assert (tmp_path / "aekl_4" / "metrics.csv").exists()
    # the trained model as a baseline encoder for the probe comparison: mean and 5x6x5 grid features
    from braing3n.evaluate.encoders import build_encoder

    enc = build_encoder("aekl", {}, aekl_dir=str(tmp_path / "aekl_4"))
    x = torch.randn(1, 1, 160, 192, 160)
    feats = enc(x)
    assert sorted(feats) == ["grid", "mean"] and feats["mean"].shape == (1, 4) and feats["grid"].shape == (1, 600)
    torch.testing.assert_close(feats["mean"], encode_tokens(model, x).mean(1))  # posterior means, pooled
