"""`braing3n bench memory`: the fake-tensor count of saved activations equals a real step's count."""

import torch

from braing3n.bench.memory import saved_activation_bytes, state_bytes
from braing3n.bench.paper import base_config, make_task, write_store


def test_fake_count_matches_a_real_bf16_forward_and_state_is_counted_from_the_model(tmp_path):
    config = base_config(tmp_path)
    write_store(tmp_path, n=1)
    pt = make_task("mae-vitb", config, tiny=True)
    fake = saved_activation_bytes(pt, 1, bf16=True, fake=True)
    torch.manual_seed(0)
    model = pt.task.build_model()
    real = saved_activation_bytes(pt, 1, bf16=True, fake=False, model=model)
    assert fake["tensors"] == real["tensors"] > 50
    # only LayerNorm's per-token mean/rstd differ (fake kernel: bf16, CPU kernel: fp32)
    assert abs(fake["bytes"] - real["bytes"]) / real["bytes"] < 1e-3
    two = saved_activation_bytes(pt, 2, bf16=True, fake=True)
    assert 1.9 < two["bytes"] / fake["bytes"] < 2.0  # linear in batch, plus the batch-free bf16 weight copies
    st = state_bytes(pt, model)
    n = sum(p.numel() for p in model.parameters())
    assert st["adamw_gib"] == 2 * st["grads_gib"] == 8 * n / 2**30
