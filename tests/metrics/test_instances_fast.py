"""The fast object rule (per-component crops) gives exactly the reference's labels.

``separate_instances(..., fast=False)`` is the rule as first written: the whole image's
distance transform (scipy) and scikit-image's ``peak_local_max`` per component. The fast
path must not change a single label, in evaluation or on slides.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage
from skimage.measure import label

from sa2_pipeline.config import InstanceConfig
from sa2_pipeline.metrics.instances import _distance, extract_instances, separate_instances


def _blobs(rng: np.random.Generator, height: int, width: int, count: int) -> np.ndarray:
    """Discs of radius 1-9 (touching, overlapping), sometimes speckle and a full row."""
    yy, xx = np.mgrid[:height, :width]
    fg = np.zeros((height, width), dtype=bool)
    for _ in range(count):
        cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(1, 9)
        fg |= (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    if rng.random() < 0.3:
        fg |= rng.random((height, width)) < 0.05
    if rng.random() < 0.2:
        fg[rng.integers(height), :] = True
    return fg


@settings(max_examples=120, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), height=st.integers(1, 90), width=st.integers(1, 90),
       count=st.integers(0, 30), min_distance=st.integers(1, 6),
       min_size=st.sampled_from([0, 3, 10]), connectivity=st.sampled_from([1, 2]),
       drop=st.booleans())
def test_fast_rule_equals_reference(seed, height, width, count, min_distance, min_size,
                                    connectivity, drop):
    rng = np.random.default_rng(seed)
    foreground = _blobs(rng, height, width, count)
    cfg = InstanceConfig(min_distance=min_distance, min_size=min_size,
                         connectivity=connectivity)
    components = label(foreground, connectivity=connectivity)
    if drop and components.max():  # the slide path leaves unfinished components out
        components[np.isin(components, rng.integers(1, components.max() + 1, 3))] = 0
    fast = separate_instances(foreground, components, cfg)
    reference = separate_instances(foreground, components, cfg, fast=False)
    np.testing.assert_array_equal(fast, reference)


@pytest.mark.parametrize("shape", ["plateau", "line", "pixel", "ring", "full"])
def test_degenerate_components_equal_reference(shape):
    fg = np.zeros((40, 40), dtype=bool)
    if shape == "plateau":  # an even square: four equal peaks
        fg[10:20, 10:20] = True
    elif shape == "line":  # every pixel a peak: peak_local_max's "trivial image"
        fg[5, 3:30] = True
    elif shape == "pixel":
        fg[7, 7] = fg[30, 30] = True
    elif shape == "ring":
        yy, xx = np.mgrid[:40, :40]
        d = np.hypot(yy - 20, xx - 20)
        fg = (d < 15) & (d > 6)
    else:
        fg[:] = True
    for cfg in (InstanceConfig(min_size=0), InstanceConfig(min_size=0, min_distance=1),
                InstanceConfig(min_size=0, connectivity=2)):
        components = label(fg, connectivity=cfg.connectivity)
        np.testing.assert_array_equal(separate_instances(fg, components, cfg),
                                      separate_instances(fg, components, cfg, fast=False))


def test_fast_rule_still_splits_touching_nuclei():
    """Not a vacuous equality: two touching discs become two objects, one disc one."""
    yy, xx = np.mgrid[:60, :80]
    pair = (np.hypot(yy - 30, xx - 25) < 10) | (np.hypot(yy - 30, xx - 42) < 10)
    assert extract_instances(pair.astype(np.float32)).max() == 2
    assert extract_instances((np.hypot(yy - 30, xx - 40) < 10).astype(np.float32)).max() == 1


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), height=st.integers(1, 200), width=st.integers(1, 200),
       fill=st.floats(0.0, 1.0), closing=st.integers(0, 20))
def test_distance_equals_scipy_bit_for_bit(seed, height, width, fill, closing):
    rng = np.random.default_rng(seed)
    fg = rng.random((height, width)) < fill
    if closing:
        fg = ndimage.binary_closing(fg, iterations=closing)
    expected = ndimage.distance_transform_edt(fg)
    got = _distance(fg)
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


def test_distance_beyond_the_exact_range_goes_to_scipy():
    fg = np.ones((1200, 2600), dtype=bool)
    fg[0, 0] = False  # distances up to about 2,800 px
    np.testing.assert_array_equal(_distance(fg), ndimage.distance_transform_edt(fg))
