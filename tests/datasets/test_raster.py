"""Raster helpers: resizing an image and its mask together."""

import numpy as np
import pytest


def test_limit_side_caps_the_longer_side_only_when_needed() -> None:
    from sa2_pipeline.datasets.raster import limit_side

    image = np.zeros((300, 120, 3), np.uint8)
    image[:, 60:] = 200
    mask = np.zeros((300, 120), np.uint8)
    mask[:, 60:] = 2
    small, small_mask = limit_side(image, mask, 100)
    assert small.shape == (100, 40, 3) and small_mask.shape == (100, 40)
    assert set(np.unique(small_mask)) == {0, 2}
    assert small[:, :20].max() == 0 and small[:, 20:].min() == 200
    same, same_mask = limit_side(image, mask, 300)
    assert same is image and same_mask is mask
    grey, _ = limit_side(np.zeros((300, 120, 1), np.uint8), mask, 100)
    assert grey.shape == (100, 40, 1)
    with pytest.raises(ValueError, match="max_side"):
        limit_side(image, mask, 0)
