"""BrainG3N: raw brain MRI -> frozen 3D MAE tokenizer -> conditional flow-matching DiT."""

__version__ = "0.1.0"
