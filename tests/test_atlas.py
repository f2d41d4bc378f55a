import nibabel as nib
import numpy as np

from braing3n.atlas import AFFINE, SHAPE, atlas_paths, check_atlas


def test_atlas_geometry_and_mask_agree():
    a = atlas_paths()
    for path in (a.t1, a.t1_brain, a.brain_mask):
        img = nib.load(path)
        assert img.shape == SHAPE == (240, 240, 155)
        assert np.allclose(img.header.get_zooms(), (1.0, 1.0, 1.0))
        assert nib.aff2axcodes(img.affine) == ("L", "P", "S")
        assert np.allclose(img.affine, AFFINE)
    brain = np.asanyarray(nib.load(a.t1_brain).dataobj)
    mask = np.asanyarray(nib.load(a.brain_mask).dataobj)
    assert np.array_equal(mask > 0, brain > 0)
    # an adult brain: 1.1-1.8 L at 1 mm^3 per voxel
    assert 1_100_000 < int(mask.sum()) < 1_800_000
    # the head image holds the brain: the skull-stripped voxels are inside the head's support
    head = np.asanyarray(nib.load(a.t1).dataobj)
    assert (head[mask > 0] > 0).mean() > 0.99
    assert check_atlas() == []


def test_missing_atlas_is_a_clear_error(tmp_path):
    import pytest

    from braing3n.atlas import AtlasMissingError

    with pytest.raises(AtlasMissingError, match="braing3n atlas build"):
        atlas_paths(tmp_path)
