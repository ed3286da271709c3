"""Objects on a slide are evaluation's objects: streamed band by band, an object that
straddles a band seam is one object, found once, with its whole outline."""

from __future__ import annotations

import numpy as np
import pytest
from slide_objects_helpers import nuclei_probability

from sa2_pipeline.config import InstanceConfig
from sa2_pipeline.inference.instances_stream import InstanceStream
from sa2_pipeline.metrics.instances import extract_instances


def _stream(prob: np.ndarray, heights, cfg: InstanceConfig, threshold: float = 0.5):
    height, width = prob.shape
    stream = InstanceStream(width, height, cfg)
    objects, label_rows = [], []
    first, k = 0, 0
    while first < height:
        h = heights[k % len(heights)]
        k += 1
        band = prob[first : first + h]
        new, rows = stream.add(first, band > threshold, band)
        objects += new
        label_rows += rows
        first += band.shape[0]
    new, rows = stream.finish()
    objects += new
    label_rows += rows
    return objects, label_rows


def _pixels(obj) -> set[tuple[int, int]]:
    ys, xs = np.nonzero(obj.mask)
    return set(zip((ys + obj.top).tolist(), (xs + obj.left).tolist(), strict=True))


@pytest.mark.parametrize("method", ["watershed", "components"])
@pytest.mark.parametrize("heights", [[1], [7], [16, 3, 40], [64], [500]])
def test_streamed_objects_equal_in_memory_objects(heights, method):
    prob = nuclei_probability(300, 260, seed=4, count=90)
    cfg = InstanceConfig(method=method, min_distance=4, min_size=10)
    expected = extract_instances(prob, cfg)
    objects, label_rows = _stream(prob, heights, cfg)

    assert len(objects) == expected.max() > 25
    assert [o.id for o in objects] == list(range(1, len(objects) + 1))  # each once
    # straddling: many objects cross a seam of the 7-row bands
    assert sum(o.top // 7 != (o.top + o.mask.shape[0] - 1) // 7 for o in objects) > 20
    for obj in objects:
        pixels = _pixels(obj)
        ys, xs = zip(*pixels, strict=True)
        values, counts = np.unique(expected[list(ys), list(xs)], return_counts=True)
        match = values[np.argmax(counts)]
        truth = np.argwhere(expected == match)
        truth_set = set(map(tuple, truth.tolist()))
        iou = len(pixels & truth_set) / len(pixels | truth_set)
        assert iou >= 0.99
    # the label rows tile the image in order and carry the same objects
    labels = np.concatenate([rows for _, rows in label_rows])
    assert [f for f, _ in label_rows] == list(np.cumsum([0] + [len(r) for _, r in
                                                               label_rows])[:-1])
    assert labels.shape == prob.shape
    assert len(np.unique(labels[labels > 0])) == len(objects)


@pytest.mark.parametrize("connectivity", [1, 2])
def test_streamed_objects_of_a_noisy_mask_equal_in_memory_objects(connectivity):
    """Many small fragments touching diagonally (a real model's ragged mask)."""
    rng = np.random.default_rng(2)
    prob = np.clip(nuclei_probability(200, 180, seed=7, count=50)
                   + rng.normal(0, 0.35, (200, 180)), 0, 1).astype(np.float32)
    cfg = InstanceConfig(connectivity=connectivity)
    expected = extract_instances(prob, cfg)
    for heights in ([5], [33, 2]):
        objects, label_rows = _stream(prob, heights, cfg)
        labels = np.concatenate([rows for _, rows in label_rows])
        assert len(objects) == expected.max() > 20
        # the same partition of the pixels: every streamed object is one in-memory object
        pairs = np.unique(np.stack([labels[labels > 0], expected[labels > 0]]), axis=1)
        assert pairs.shape[1] == len(objects) and ((labels > 0) == (expected > 0)).all()


def test_watershed_splits_touching_nuclei_that_components_join():
    prob = nuclei_probability(200, 200, seed=1, count=40)
    split = _stream(prob, [9], InstanceConfig(method="watershed"))[0]
    joined = _stream(prob, [9], InstanceConfig(method="components"))[0]
    assert len(split) > len(joined)


def test_rows_must_arrive_in_order():
    stream = InstanceStream(10, 10)
    stream.add(0, np.zeros((3, 10), bool), np.zeros((3, 10)))
    with pytest.raises(ValueError, match="expected row 3"):
        stream.add(5, np.zeros((3, 10), bool), np.zeros((3, 10)))


def test_a_runaway_object_is_cut_instead_of_growing_the_buffer(caplog):
    """A foreground stripe taller than max_rows: memory stays bounded, each piece once."""
    prob = np.zeros((400, 30), np.float32)
    prob[:, 10:20] = 1.0
    stream = InstanceStream(30, 400, InstanceConfig(method="components"), context=8,
                            max_rows=100)
    objects = []
    for first in range(0, 400, 20):
        band = prob[first : first + 20]
        objects += stream.add(first, band > 0.5, band)[0]
        assert len(stream.fg) <= 100 + 20
    objects += stream.finish()[0]
    assert 2 <= len(objects) <= 5 and sum(o.area for o in objects) == 4000
    assert "taller than 100 rows" in caplog.text


def test_on_a_wide_slide_the_buffer_is_bounded_in_pixels_not_rows(monkeypatch):
    from sa2_pipeline.inference import instances_stream

    monkeypatch.setattr(instances_stream, "MAX_BUFFER_PIXELS", 40 * 200)
    narrow = InstanceStream(30, 400, context=8, max_rows=100)
    wide = InstanceStream(200, 400, context=8, max_rows=100)
    assert (narrow.max_rows, wide.max_rows) == (100, 40)
    prob = np.zeros((400, 200), np.float32)
    prob[:, 50:150] = 1.0
    for first in range(0, 400, 20):
        band = prob[first : first + 20]
        wide.add(first, band > 0.5, band)
        assert len(wide.fg) <= 40 + 20


def test_a_giant_component_stays_one_object_instead_of_a_huge_watershed(monkeypatch,
                                                                        caplog):
    from sa2_pipeline.metrics import instances
    from sa2_pipeline.metrics.instances import extract_instances

    yy, xx = np.mgrid[:80, :160]
    pair = ((np.hypot(yy - 40, xx - 60) < 25) | (np.hypot(yy - 40, xx - 100) < 25))
    assert extract_instances(pair.astype(np.float32)).max() == 2  # the rule splits it
    monkeypatch.setattr(instances, "MAX_SPLIT_PIXELS", 50 * 50)
    assert extract_instances(pair.astype(np.float32)).max() == 1
    assert "not split into objects" in caplog.text
