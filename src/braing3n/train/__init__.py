"""The shared training engine (MAE, decoder, DiT, AutoencoderKL): see ``engine.fit``."""

from braing3n.train.engine import Task, TrainConfig, fit, load_weights, release_weights, train_config

__all__ = ["Task", "TrainConfig", "fit", "load_weights", "release_weights", "train_config"]
