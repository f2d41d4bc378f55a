"""Encoder adapters: output shapes with random weights, user-weight loading, clear errors."""

import numpy as np
import pytest
import torch

from braing3n.evaluate.encoders import build_encoder, embed_batches, load_user_weights

torch.set_num_threads(1)


def test_random_vit_on_model_grid_is_seeded():
    spec = {"hidden": 32, "layers": 1, "heads": 2}
    x = torch.randn(2, 1, 160, 192, 160)
    a = build_encoder("random_vit", spec, seed=3)
    with torch.no_grad():
        out = a(x)
        again = build_encoder("random_vit", spec, seed=3)(x)
    assert out["cls"].shape == (2, 32) and out["mean"].shape == (2, 32)
    torch.testing.assert_close(out["mean"], again["mean"])


def test_external_adapters_shapes_with_random_weights():
    x = torch.randn(1, 1, 64, 64, 64)
    with torch.no_grad():
        iac = build_encoder("brainiac", {"random_weights": True})(x)  # resized to 96^3 inside
        swin = build_encoder("brainsegfounder", {"random_weights": True, "feature_size": 12})(x)
        med = build_encoder("medicalnet", {"random_weights": True, "depth": 10})(x)
    assert iac["cls"].shape == (1, 768) and iac["mean"].shape == (1, 768)
    assert swin["mean"].shape == (1, 16 * 12)
    assert med["mean"].shape == (1, 512) and "cls" not in med


def test_user_weights_required_and_loaded(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        build_encoder("medicalnet", {"depth": 10})
    with pytest.raises(FileNotFoundError, match="nope.pth: medicalnet weight file not found"):
        build_encoder("medicalnet", {"depth": 10, "weights": str(tmp_path / "nope.pth")})
    src = build_encoder("medicalnet", {"random_weights": True, "depth": 10}, seed=1)
    ckpt = tmp_path / "resnet_10.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.net.state_dict().items()}}, ckpt)
    dst = build_encoder("medicalnet", {"depth": 10, "weights": str(ckpt)}, seed=2)
    for k, v in src.net.state_dict().items():
        torch.testing.assert_close(dst.net.state_dict()[k], v)
    torch.save({"unrelated.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="bad.pth: only 0 of"):
        load_user_weights(dst.net, str(tmp_path / "bad.pth"), "medicalnet")


def test_embed_batches_restores_order():
    enc = build_encoder("medicalnet", {"random_weights": True, "depth": 10})
    vols = torch.rand(3, 1, 32, 32, 32).half()
    batches = [([2], vols[2:3]), ([0, 1], vols[0:2])]
    out = embed_batches(enc, iter(batches), torch.device("cpu"))
    with torch.no_grad():
        from braing3n.data.loader import zscore

        ref = enc(zscore(vols))["mean"].numpy()
    np.testing.assert_allclose(out["mean"], ref, rtol=1e-4, atol=1e-5)


def test_random_floor_uses_the_mae_architecture():
    from braing3n.models.mae import mae_config

    cfg = mae_config("tiny").to_dict()
    enc = build_encoder("random_vit", {}, seed=0, mae_config=cfg)
    with torch.no_grad():
        out = enc(torch.randn(1, 1, 160, 192, 160))
    assert out["cls"].shape == (1, cfg["width"]) and out["mean"].shape == (1, cfg["width"])
