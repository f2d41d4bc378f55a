"""The flow-matching convention (braing3n.flow) against closed-form Gaussian cases."""

import pytest
import torch

from braing3n import flow

torch.set_num_threads(1)


def test_path_endpoints_and_velocity():
    g = torch.Generator().manual_seed(0)
    x1, eps = torch.randn(4, 6, 3, generator=g), torch.randn(4, 6, 3, generator=g)
    assert torch.equal(flow.interpolate(x1, eps, torch.zeros(4)), x1)  # t = 0 is data
    assert torch.equal(flow.interpolate(x1, eps, torch.ones(4)), eps)  # t = 1 is noise
    # finite difference along the path equals the target velocity eps - x1
    t, h = torch.full((4,), 0.3), 1e-3
    fd = (flow.interpolate(x1, eps, t + h) - flow.interpolate(x1, eps, t - h)) / (2 * h)
    assert torch.allclose(fd, flow.target_velocity(x1, eps), atol=1e-3)


def test_regression_target_matches_gaussian_optimal_velocity():
    """Least squares of the training target on x_t recovers the closed-form E[eps - x1 | x_t]."""
    g = torch.Generator().manual_seed(1)
    mu, sigma, n = torch.tensor(2.0), torch.tensor(0.5), 200_000
    for tv in (0.2, 0.5, 0.8):
        x1 = mu + sigma * torch.randn(n, generator=g)
        eps = torch.randn(n, generator=g)
        t = torch.full((n,), tv)
        xt, v = flow.interpolate(x1, eps, t), flow.target_velocity(x1, eps)
        a = torch.stack([xt, torch.ones(n)], 1)
        coef = torch.linalg.lstsq(a, v[:, None]).solution.squeeze()  # E[v|x] is linear in x here
        probe = torch.tensor([0.0, 1.0, 3.0])
        fit = coef[0] * probe + coef[1]
        exact = flow.gaussian_optimal_velocity(probe, torch.full((3,), tv), mu, sigma)
        assert torch.allclose(fit, exact, atol=0.02), (tv, fit, exact)


@pytest.mark.parametrize("solver,steps,tol", [("euler", 200, 0.03), ("heun", 20, 0.01)])
def test_ode_with_optimal_velocity_transports_noise_to_data(solver, steps, tol):
    """Integrating the optimal field from t=1 to t=0 turns N(0,1) into N(mu, sigma^2)."""
    mu, sigma = torch.tensor([2.0, -1.0]), torch.tensor([0.5, 1.5])
    noise = torch.randn(50_000, 2, generator=torch.Generator().manual_seed(2))
    out = flow.integrate(lambda x, t: flow.gaussian_optimal_velocity(x, t, mu, sigma), noise, steps, solver)
    assert torch.allclose(out.mean(0), mu, atol=tol + 0.02)
    assert torch.allclose(out.std(0), sigma, atol=tol + 0.02)
    # deterministic map: each sample lands on mu + sigma * noise (the Gaussian OT map)
    assert torch.allclose(out, mu + sigma * noise, atol=tol * 3)


def test_heun_more_accurate_than_euler_at_equal_steps():
    mu, sigma = torch.tensor(1.0), torch.tensor(0.2)
    noise = torch.linspace(-2, 2, 101)
    def field(x, t):
        return flow.gaussian_optimal_velocity(x, t, mu, sigma)
    exact = mu + sigma * noise
    err_e = (flow.integrate(field, noise, 10, "euler") - exact).abs().max()
    err_h = (flow.integrate(field, noise, 10, "heun") - exact).abs().max()
    assert err_h < err_e / 5


def test_cfg_is_one_batched_forward_and_interpolates():
    calls = []

    def model(x, t, cond):
        calls.append(x.shape[0])
        return x * 0 + cond["c"][:, None].float()

    x, t = torch.zeros(3, 4), torch.full((3,), 0.5)
    cond, uncond = {"c": torch.full((3,), 2.0)}, {"c": torch.full((3,), -1.0)}
    assert torch.allclose(flow.guided_velocity(model, x, t, cond, uncond, 1.0), torch.full((3, 4), 2.0))
    assert torch.allclose(flow.guided_velocity(model, x, t, cond, uncond, 0.0), torch.full((3, 4), -1.0))
    assert torch.allclose(flow.guided_velocity(model, x, t, cond, uncond, 3.0), torch.full((3, 4), 8.0))
    assert calls == [6, 6, 6]


def test_time_samplers_and_errors():
    g = torch.Generator().manual_seed(0)
    u = flow.sample_time(100_000, "uniform", g)
    ln = flow.sample_time(100_000, "logit_normal", g)
    assert 0 <= u.min() and u.max() <= 1 and abs(u.mean() - 0.5) < 0.01
    assert abs(ln.mean() - 0.5) < 0.01 and ln.std() < u.std()  # logit-normal concentrates mid-path
    with pytest.raises(ValueError, match="unknown time sampler"):
        flow.sample_time(3, "cosine")
    with pytest.raises(ValueError, match="unknown solver"):
        flow.integrate(lambda x, t: x, torch.zeros(2), 3, "rk4")


def test_same_path_as_monai_rflow_scheduler_with_opposite_velocity_sign():
    """MONAI's RFlowScheduler uses the same straight path (t = timestep / 1000) but v = x1 - eps:
    our Euler step with v equals its step with model_output = -v."""
    from monai.networks.schedulers import RFlowScheduler

    g = torch.Generator().manual_seed(0)
    x1, eps = torch.randn(2, 1, 4, 4, 4, generator=g), torch.randn(2, 1, 4, 4, 4, generator=g)
    sched = RFlowScheduler(num_train_timesteps=1000, use_discrete_timesteps=False)
    ts = torch.tensor([300.0, 800.0])
    assert torch.allclose(sched.add_noise(x1, eps, ts), flow.interpolate(x1, eps, ts / 1000), atol=1e-6)
    sched.set_timesteps(num_inference_steps=4)
    x, v = eps.clone(), flow.target_velocity(x1, eps)
    t_cur, t_next = sched.timesteps[0], sched.timesteps[1]
    monai_next, _ = sched.step(-v, t_cur, x, t_next)
    ours = flow.integrate(lambda x_, t_: v, x, steps=4, solver="euler")  # constant field: 4 equal steps
    assert torch.allclose(monai_next, x - 0.25 * v, atol=1e-6)
    assert torch.allclose(ours, x1, atol=1e-5)  # the exact straight-path field lands on the data
