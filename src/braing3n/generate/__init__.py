"""Conditional generation and longitudinal forecasting with the flow-matching DiT.

Public API (used by the evaluation stage): ``load_generator(model_dir, device)`` and
``sample_latents(gen, conditions, n, cfg_scale, steps, solver, seed)``.
"""

from braing3n.generate.sampler import Generator, load_generator, sample_latents

__all__ = ["Generator", "load_generator", "sample_latents"]
