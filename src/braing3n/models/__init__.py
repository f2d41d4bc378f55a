"""Model definitions: MAE encoder/decoder, DiT, AutoencoderKL baseline."""
