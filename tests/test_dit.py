"""DiT model: adaLN-Zero identity at init, null-condition path, CFG, fitting a few latents."""

import pytest
import torch

from braing3n import flow
from braing3n.models.dit import DiT, DiTConfig, drop_conditions, null_condition, patchify_latent, unpatchify_latent
from braing3n.models.mae import sincos_pos_embed_3d

torch.set_num_threads(1)
CATS = {"disease": 3, "sex": 2}
CONT = {"age": 1000.0}


def tiny(**kw) -> DiT:
    torch.manual_seed(0)
    cfg = DiTConfig(hidden=32, depth=2, heads=4, grid=(2, 3, 2), in_channels=8, categorical=CATS, continuous=CONT)
    for k, v in kw.items():
        setattr(cfg, k, v)
    return DiT(cfg)


def cond(b, disease=1, sex=2, age=70.0):
    return {"disease": torch.full((b,), disease), "sex": torch.full((b,), sex), "age": torch.full((b,), age)}


def test_adaln_zero_blocks_are_identity_and_output_zero_at_init():
    m = tiny()
    x, t = torch.randn(3, 12, 32), torch.rand(3)
    c = m.condition_vector(t, cond(3))
    for blk in m.blocks:
        assert torch.equal(blk(x, c), x)
    assert torch.equal(m(torch.randn(3, 12, 8), t, cond(3)), torch.zeros(3, 12, 8))


def test_paper_preset_matches_dit_xl():
    cfg = DiTConfig.from_preset("paper", categorical={"disease": 10}, continuous=CONT)
    assert (cfg.hidden, cfg.depth, cfg.heads) == (1152, 28, 16)
    with torch.device("meta"):
        m = DiT(cfg)
    n = sum(p.numel() for p in m.parameters())
    assert 640e6 < n < 700e6  # DiT-XL/2 is 675M parameters
    with pytest.raises(ValueError, match="unknown DiT preset"):
        DiTConfig.from_preset("huge")


def test_positional_table_distinct_per_token():
    pe = sincos_pos_embed_3d((10, 12, 10), 96)
    assert pe.shape == (1200, 96)
    assert torch.cdist(pe, pe).add(torch.eye(1200) * 1e3).min() > 0.1


def test_latent_patch_round_trip_groups_neighbouring_tokens():
    grid = (10, 12, 10)
    x = torch.randn(2, 1200, 32)
    tok = patchify_latent(x, grid, 2)
    assert tok.shape == (2, 150, 256)
    assert torch.equal(unpatchify_latent(tok, grid, 2), x)
    # transformer token 0 holds latent tokens (d, h, w) in {0, 1}^3 of the 10x12x10 grid
    g = x.reshape(2, 10, 12, 10, 32)
    assert torch.equal(tok[:, 0].reshape(2, 2, 2, 2, 32), g[:, :2, :2, :2])
    with pytest.raises(ValueError, match="does not divide"):
        DiTConfig(hidden=32, depth=1, heads=4, grid=(10, 12, 10), patch=4)


def test_patched_dit_keeps_latent_shape_and_costs_fewer_tokens():
    cfg = DiTConfig(hidden=32, depth=1, heads=4, grid=(4, 6, 4), in_channels=8, categorical=CATS, patch=2)
    m = DiT(cfg)
    assert m.pos_embed.shape == (1, 12, 32) and m.num_tokens == 96
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    out = m(torch.randn(3, 96, 8), torch.rand(3), cond(3))
    assert out.shape == (3, 96, 8) and out.abs().sum() > 0


def _perturbed():
    m = tiny()
    with torch.no_grad():  # leave the zero init so outputs depend on the conditions
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m.eval()


def test_dropping_every_condition_equals_null_path():
    m = _perturbed()
    x, t = torch.randn(4, 12, 8), torch.rand(4)
    dropped = drop_conditions(cond(4), {"disease": 1.0, "sex": 1.0, "age": 1.0})
    null = null_condition(m.cfg, 4)
    out_drop, out_null, out_empty = m(x, t, dropped), m(x, t, null), m(x, t, {})
    assert torch.allclose(out_drop, out_null) and torch.allclose(out_null, out_empty)
    assert not torch.allclose(out_null, m(x, t, cond(4)), atol=1e-4)
    kept = drop_conditions(cond(4), {"disease": 0.0, "sex": 0.0, "age": 0.0})
    assert torch.equal(m(x, t, kept), m(x, t, cond(4)))


def test_drop_probability_is_per_condition():
    torch.manual_seed(0)
    c = cond(20_000)
    d = drop_conditions(c, {"disease": 0.1, "sex": 0.5, "age": 0.3})
    assert abs((d["disease"] == 0).float().mean() - 0.1) < 0.01
    assert abs((d["sex"] == 0).float().mean() - 0.5) < 0.015
    assert abs(torch.isnan(d["age"]).float().mean() - 0.3) < 0.015


def test_joint_drop_trains_the_all_unknown_branch():
    # three conditions at 0.1 each: alone, all three unknown together 0.1% of the time; with the joint
    # drop at 0.1, ~10%, each condition then unknown ~19% of the time (0.1 + 0.9 * 0.1)
    torch.manual_seed(0)
    probs = {"disease": 0.1, "sex": 0.1, "age": 0.1}
    d = drop_conditions(cond(20_000), probs)
    assert ((d["disease"] == 0) & (d["sex"] == 0) & torch.isnan(d["age"])).float().mean() < 0.003
    d = drop_conditions(cond(20_000), probs, all_prob=0.1)
    all_unknown = ((d["disease"] == 0) & (d["sex"] == 0) & torch.isnan(d["age"])).float().mean()
    assert abs(all_unknown - 0.1) < 0.01 and abs((d["sex"] == 0).float().mean() - 0.19) < 0.012
    # a condition at probability 0 is never dropped, the joint drop included
    d = drop_conditions(cond(2_000), {"disease": 0.1, "sex": 0.0, "age": 0.1}, all_prob=1.0)
    assert (d["disease"] == 0).all() and torch.isnan(d["age"]).all() and torch.equal(d["sex"], cond(2_000)["sex"])
    # all_prob 0 draws exactly what the per-condition drop drew before (same random stream)
    torch.manual_seed(1)
    a = drop_conditions(cond(64), probs)
    torch.manual_seed(1)
    b = drop_conditions(cond(64), probs, all_prob=0.0)
    assert all(torch.equal(torch.nan_to_num(a[k], -1.0), torch.nan_to_num(b[k], -1.0)) for k in a)


def test_cfg_w1_is_conditional_and_w0_unconditional_on_the_model():
    m = _perturbed()
    x, t = torch.randn(3, 12, 8), torch.rand(3)
    c, u = cond(3), null_condition(m.cfg, 3)
    assert torch.allclose(flow.guided_velocity(m, x, t, c, u, 1.0), m(x, t, c), atol=1e-5)
    assert torch.allclose(flow.guided_velocity(m, x, t, c, u, 0.0), m(x, t, u), atol=1e-5)
    w3 = flow.guided_velocity(m, x, t, c, u, 3.0)
    assert torch.allclose(w3, m(x, t, u) + 3 * (m(x, t, c) - m(x, t, u)), atol=1e-5)


def test_context_channels_required_and_used():
    m = tiny(context_channels=8)
    with pytest.raises(ValueError, match="context"):
        m(torch.randn(2, 12, 8), torch.rand(2), cond(2))
    assert m.x_embed.in_features == 16


def test_tiny_model_fits_a_handful_of_latents():
    torch.manual_seed(0)
    m = tiny(hidden=64, depth=2)
    x1 = torch.randn(4, 12, 8) * 2 + torch.linspace(-1, 1, 8)
    c = {"disease": torch.tensor([1, 2, 3, 1]), "sex": torch.tensor([1, 2, 1, 2]),
         "age": torch.tensor([20.0, 40.0, 60.0, 80.0])}
    opt = torch.optim.AdamW(m.parameters(), lr=2e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(0)
    t_fix, e_fix = torch.rand(64, generator=g), torch.randn(64, 12, 8, generator=g)
    def val_loss():
        with torch.no_grad():
            xs = x1.repeat(16, 1, 1)
            cs = {k: v.repeat(16) for k, v in c.items()}
            return float(flow.flow_loss(m, xs, cs, t_fix, e_fix))
    first = val_loss()
    for _ in range(600):
        t, eps = torch.rand(4, generator=g), torch.randn(4, 12, 8, generator=g)
        loss = flow.flow_loss(m, x1, c, t, eps)
        opt.zero_grad()
        loss.backward()
        opt.step()
    last = val_loss()
    # the Bayes floor is > 0 (velocity is ambiguous mid-path), but with 4 memorable points it is small
    assert last < first / 10, (first, last)
