"""Model-input store (160x192x160 float16 .npy per scan) and its loader."""

from braing3n.data.geometry import MODEL_AFFINE, MODEL_SHAPE, crop_to_model, uncrop_to_atlas, write_atlas_nifti

__all__ = ["MODEL_AFFINE", "MODEL_SHAPE", "crop_to_model", "uncrop_to_atlas", "write_atlas_nifti"]
