"""Flow matching: THE one place for the path, target, loss, time sampling and ODE sampler.

Convention (rectified flow, as in the BrainG3N paper and SiT):
    data x1 sits at t = 0, Gaussian noise eps at t = 1, on the straight path
        x_t = (1 - t) * x1 + t * eps
    whose velocity dx_t/dt is the constant
        v = eps - x1
    The network regresses v:  loss = || v_pred(x_t, t) - (eps - x1) ||^2.
    Sampling integrates dx/dt = v from t = 1 (noise) down to t = 0 (data).
Classifier-free guidance: v = v_u + w * (v_c - v_u); w = 1 is the conditional model,
w = 0 the unconditional one; both halves go through ONE batched forward.

MONAI's RFlowScheduler walks the same path (t = timestep / 1000) with the opposite velocity
sign (x1 - eps) and Euler steps on 4D/5D images only; we need Heun, CFG and token sequences,
so the integrator lives here (tests/test_flow.py checks the two agree).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# model(x_t, t, cond) -> velocity, with cond a dict of per-sample tensors (batch first)
VelocityFn = Callable[[torch.Tensor, torch.Tensor, dict], torch.Tensor]

SOLVERS = ("euler", "heun")
TIME_SAMPLERS = ("uniform", "logit_normal")


def interpolate(x1: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = (1 - t) x1 + t eps, t of shape [B] broadcast over the remaining dims."""
    tb = t.reshape(-1, *([1] * (x1.dim() - 1))).to(x1.dtype)
    return (1 - tb) * x1 + tb * eps


def target_velocity(x1: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """d x_t / dt on the straight path: eps - x1."""
    return eps - x1


def sample_time(n: int, mode: str = "uniform", generator: torch.Generator | None = None,
                device: torch.device | str = "cpu", loc: float = 0.0, scale: float = 1.0) -> torch.Tensor:
    """Training times in (0, 1). logit_normal = sigmoid(N(loc, scale)) puts more weight mid-path (SD3)."""
    if mode == "uniform":
        return torch.rand(n, generator=generator, device=device)
    if mode == "logit_normal":
        return torch.sigmoid(loc + scale * torch.randn(n, generator=generator, device=device))
    raise ValueError(f"unknown time sampler {mode!r}; choose one of {TIME_SAMPLERS}")


def flow_loss(model: VelocityFn, x1: torch.Tensor, cond: dict, t: torch.Tensor, eps: torch.Tensor
              ) -> torch.Tensor:
    """Mean squared error between predicted and straight-path velocity (mean over all elements)."""
    xt = interpolate(x1, eps, t)
    v_pred = model(xt, t, cond)
    return torch.mean((v_pred.float() - target_velocity(x1, eps).float()) ** 2)


def concat_cond(a: dict, b: dict) -> dict:
    """Batch-concatenate two condition dicts with the same keys."""
    if set(a) != set(b):
        raise ValueError(f"condition keys differ: {sorted(a)} vs {sorted(b)}")
    return {k: torch.cat([a[k], b[k]], dim=0) for k in a}


def guided_velocity(model: VelocityFn, x: torch.Tensor, t: torch.Tensor, cond: dict, uncond: dict,
                    w: float) -> torch.Tensor:
    """v_u + w (v_c - v_u) from one forward over the doubled batch [cond; uncond]."""
    n = x.shape[0]
    v = model(torch.cat([x, x], 0), torch.cat([t, t], 0), concat_cond(cond, uncond))
    v_c, v_u = v[:n], v[n:]
    return v_u + w * (v_c - v_u)


def time_grid(steps: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """steps + 1 equally spaced times from 1 (noise) to 0 (data)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return torch.linspace(1.0, 0.0, steps + 1, device=device)


@torch.no_grad()
def integrate(velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], noise: torch.Tensor,
              steps: int = 50, solver: str = "heun") -> torch.Tensor:
    """Solve dx/dt = velocity(x, t) from t = 1 (x = noise) to t = 0.

    Euler: 1 evaluation per step. Heun (explicit trapezoid): 2 evaluations per step. The velocity
    is finite at t = 0 on this path, so Heun's corrector is used on the last step too.
    """
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose one of {SOLVERS}")
    ts = time_grid(steps, noise.device)
    x = noise
    for i in range(steps):
        t, t_next = ts[i], ts[i + 1]
        dt = t_next - t  # negative: we move towards the data
        tb = t.expand(x.shape[0])
        v = velocity(x, tb)
        x_next = x + dt * v
        if solver == "heun":
            v_next = velocity(x_next, t_next.expand(x.shape[0]))
            x_next = x + dt * 0.5 * (v + v_next)
        x = x_next
    return x


def sample(model: VelocityFn, noise: torch.Tensor, cond: dict, uncond: dict | None = None,
           cfg_scale: float = 1.0, steps: int = 50, solver: str = "heun") -> torch.Tensor:
    """ODE sampling from noise with optional classifier-free guidance (cfg_scale != 1)."""
    if uncond is None or cfg_scale == 1.0:
        return integrate(lambda x, t: model(x, t, cond), noise, steps, solver)
    return integrate(lambda x, t: guided_velocity(model, x, t, cond, uncond, cfg_scale), noise, steps, solver)


def gaussian_optimal_velocity(x: torch.Tensor, t: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor
                              ) -> torch.Tensor:
    """E[eps - x1 | x_t = x] for data x1 ~ N(mu, sigma^2) (independent dims), eps ~ N(0, 1).

    Closed form of the Gaussian conditional expectation; used to test the convention above.
    """
    tb = t.reshape(-1, *([1] * (x.dim() - 1)))
    mean_t = (1 - tb) * mu
    var_t = (1 - tb) ** 2 * sigma**2 + tb**2
    cov = tb - (1 - tb) * sigma**2  # Cov(eps - x1, x_t)
    return -mu + cov / var_t * (x - mean_t)
