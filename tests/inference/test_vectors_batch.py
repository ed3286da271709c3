"""The batch vector functions (:func:`level0_polygons`, :func:`measurements_batch`,
:meth:`GeoJSONWriter.write_many`) give exactly what the one-object functions give."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import uuid

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sa2_pipeline.inference.instances_stream import SlideObject
from sa2_pipeline.inference.vectors import (
    _ID_NAMESPACE,
    GeoJSONWriter,
    _feature_id,
    _rounded,
    _simple_shell,
    level0_polygon,
    level0_polygons,
    measurements,
    measurements_batch,
)


def _disc(radius: float, centre: tuple[float, float] | None = None,
          shape: tuple[int, int] | None = None) -> np.ndarray:
    side = int(2 * radius) + 3
    h, w = shape or (side, side)
    cy, cx = centre or ((h - 1) / 2, (w - 1) / 2)
    yy, xx = np.mgrid[:h, :w]
    return np.hypot(yy - cy, xx - cx) <= radius


def _pair(r1: float, r2: float, angle: float) -> np.ndarray:
    """Two disks touching (0.85 (r1 + r2) apart), one object."""
    d = 0.85 * (r1 + r2)
    side = int(2 * (d + r1 + r2)) + 4
    c = side / 2
    second = (c + d * math.sin(angle), c + d * math.cos(angle))
    return _disc(r1, (c, c), (side, side)) | _disc(r2, second, (side, side))


def _masks() -> list[np.ndarray]:
    masks = [_disc(r) for r in (1, 1.5, 2, 3, 4.3, 5.5, 7, 9.2, 12)]
    masks += [_pair(r1, r2, a) for r1, r2, a in ((4, 5, 0.3), (6, 8.5, 1.2), (9, 4.5, 2.8),
                                                 (5, 5, math.pi / 4))]
    ring = _disc(8) & ~_disc(3, shape=_disc(8).shape)  # a hole
    two_holes = np.ones((9, 15), dtype=bool)
    two_holes[3:6, 3:6] = two_holes[3:6, 9:12] = False
    diagonal = np.zeros((6, 6), dtype=bool)
    diagonal[:3, :3] = diagonal[3:, 3:] = True  # two squares touching at a corner
    diagonal_pixels = np.eye(5, dtype=bool)  # a one-pixel-wide diagonal line
    staircase = np.tril(np.ones((7, 7), dtype=bool))
    pieces = np.zeros((5, 9), dtype=bool)  # two separate pieces (several contours)
    pieces[1:4, 1:3] = pieces[0:5, 5:9] = True
    u_shape = np.ones((8, 8), dtype=bool)
    u_shape[:6, 3:5] = False
    neck = np.zeros((7, 13), dtype=bool)  # two blocks joined by a one-pixel-wide line
    neck[1:6, :5] = neck[1:6, 8:] = neck[3, 5:8] = True
    masks += [ring, two_holes, diagonal, diagonal_pixels, staircase, pieces, u_shape, neck,
              np.ones((1, 1), dtype=bool), np.ones((1, 7), dtype=bool),
              np.ones((6, 1), dtype=bool), np.ones((2, 2), dtype=bool),
              np.ones((2, 9), dtype=bool), np.array([[1, 0], [0, 1]], dtype=bool),
              np.array([[0, 1], [1, 0]], dtype=bool),
              np.array([[1, 1], [1, 0]], dtype=bool),
              _disc(5).astype(np.uint8) * 255, _pair(3, 4, 0.5).astype(np.int32)]  # not bool
    return masks


def _objects(masks, top: int = 3, left: int = 5, step: int = 7) -> list[SlideObject]:
    return [SlideObject(id=i + 1, top=top + step * i, left=left + 11 * i, mask=m,
                        mean_probability=0.5 + 0.01 * i, class_id=1 + i % 3)
            for i, m in enumerate(masks)]


def _assert_same(batch: list, scalar: list) -> None:
    assert len(batch) == len(scalar)
    for got, want in zip(batch, scalar, strict=True):
        assert got.geom_type == want.geom_type
        assert got.equals_exact(want, tolerance=0), (got.wkt, want.wkt)
        assert got.wkt == want.wkt


def _assert_same_values(batch: list[dict], scalar: list[dict]) -> None:
    assert [json.dumps(v) for v in batch] == [json.dumps(v) for v in scalar]


def _old_feature(writer: GeoJSONWriter, obj: SlideObject, outline, values) -> str | None:
    """The feature text as the one-object writer made it (mapping, _rounded, uuid5)."""
    import shapely

    if outline.is_empty:
        return None
    name = (writer.class_names[obj.class_id - 1] if obj.class_id - 1 < len(writer.class_names)
            else f"Class {obj.class_id}")
    geometry = shapely.geometry.mapping(outline)
    return json.dumps({
        "type": "Feature",
        "id": str(uuid.uuid5(_ID_NAMESPACE, f"{writer.slide_key}/{obj.id}")),
        "geometry": {"type": geometry["type"], "coordinates": _rounded(geometry["coordinates"])},
        "properties": {"objectType": "detection", "name": f"{name} {obj.id}",
                       "classification": {"name": name, "color": writer_colour(obj.class_id)},
                       "measurements": values}})


def writer_colour(class_id: int) -> list[int]:
    from sa2_pipeline.inference.vectors import class_colour

    return class_colour(class_id)


def _check(objects, scale, size0, mpp) -> None:
    batch = level0_polygons(objects, scale, size0)
    scalar = [level0_polygon(obj, scale, size0) for obj in objects]
    _assert_same(batch, scalar)
    # an object wholly outside the slide has an empty outline, which is not measured (nor
    # written): test_an_empty_object_fails_alike
    kept = [i for i, o in enumerate(scalar) if not o.is_empty]
    values = measurements_batch([objects[i] for i in kept], [batch[i] for i in kept], scale,
                                mpp)
    _assert_same_values(values, [measurements(objects[i], scalar[i], scale, mpp)
                                 for i in kept])
    values = [values[kept.index(i)] if i in kept else {} for i in range(len(objects))]
    writer = GeoJSONWriter(io.StringIO(), "slide-key", ["Nucleus", "Stroma"])
    writer.write_many(objects, batch, values)
    writer.close()
    texts = [_old_feature(writer, obj, o, v)
             for obj, o, v in zip(objects, scalar, values, strict=True)]
    want = ('{"type": "FeatureCollection", "features": [\n'
            + ",\n".join(t for t in texts if t is not None) + "\n]}\n")
    assert writer.handle.getvalue() == want


@pytest.mark.parametrize("scale", [(1.0, 1.0), (2.0, 2.0), (1.37, 0.83), (4.000123, 3.5)])
@pytest.mark.parametrize("mpp", [None, 0.25])
def test_batch_equals_scalar(scale, mpp):
    objects = _objects(_masks())
    size = (max(o.left + o.mask.shape[1] for o in objects),
            max(o.top + o.mask.shape[0] for o in objects))
    size0 = (math.ceil(size[0] * scale[0]) + 1, math.ceil(size[1] * scale[1]) + 1)
    _check(objects, scale, size0, mpp)


def test_usual_objects_take_the_batch_path():
    assert _simple_shell(_objects([_disc(6)])[0]) is not None
    assert _simple_shell(_objects([_pair(4, 5, 0.3)])[0]) is not None
    ring = _disc(8) & ~_disc(3, shape=_disc(8).shape)
    for mask in (ring, np.ones((1, 5), dtype=bool), np.ones((1, 1), dtype=bool)):
        assert _simple_shell(_objects([mask])[0]) is None


@pytest.mark.parametrize("scale", [(1.0, 1.0), (1.37, 0.83), (2.5, 2.5), (0.7, 1.9)])
def test_objects_on_the_slide_border_are_clipped_alike(scale):
    """Objects cut by the slide's edges at the inference level, a level-0 size a little
    smaller than the scaled level (so that outlines leave the slide and are clipped)."""
    width, height = 40, 30
    masks = [_disc(6), _disc(4), np.ones((5, 1), dtype=bool), _pair(4, 5, 0.3)]
    objects = []
    for i, (top, left) in enumerate([(0, 0), (0, 30), (25, 10), (27, 37), (10, 0), (0, 15),
                                     (22, 28), (12, 31)]):
        mask = masks[i % len(masks)][: height - top, : width - left]
        objects.append(SlideObject(id=i + 1, top=top, left=left, mask=mask,
                                   mean_probability=0.9, class_id=1))
    for shrink in (0, 1, 3):
        size0 = (int(width * scale[0]) - shrink, int(height * scale[1]) - shrink)
        _check(objects, scale, size0, 0.5)


def test_a_multi_class_list_and_empty_batches():
    objects = [dataclasses.replace(obj, class_id=1 + k % 4)  # a class without a name too
               for k, obj in enumerate(_objects([_disc(5), _disc(3), _pair(4, 4, 1.0),
                                                 _disc(2)] * 3))]
    _check(objects, (1.0, 1.0), (1000, 1000), 0.25)
    assert level0_polygons([], (1.0, 1.0), (10, 10)) == []
    assert measurements_batch([], [], (1.0, 1.0), None) == []


@settings(max_examples=150, deadline=None)
@given(mask=hnp.arrays(bool, hnp.array_shapes(min_dims=2, max_dims=2, max_side=12)),
       top=st.integers(0, 40), left=st.integers(0, 40),
       scale=st.sampled_from([(1.0, 1.0), (1.5, 1.5), (1.37, 0.83), (3.0, 2.0)]),
       shrink=st.integers(0, 2))
def test_random_masks(mask, top, left, scale, shrink):
    if not mask.any():
        return
    obj = SlideObject(id=7, top=top, left=left, mask=mask, mean_probability=0.7, class_id=2)
    size0 = (int((left + mask.shape[1]) * scale[0]) - shrink,
             int((top + mask.shape[0]) * scale[1]) - shrink)
    _check([obj, obj], scale, size0, None)


def test_an_empty_object_fails_alike():
    """An object without pixels (never made by the stream): the same outline, and
    measurements raise as the one-object function does."""
    import shapely

    obj = _objects([np.zeros((3, 4), dtype=bool)])[0]
    (batch,), scalar = level0_polygons([obj], (1.0, 1.0), (100, 100)), level0_polygon(
        obj, (1.0, 1.0), (100, 100))
    _assert_same([batch], [scalar])
    with pytest.raises(shapely.errors.GEOSException):
        measurements(obj, scalar, (1.0, 1.0), None)
    with pytest.raises(shapely.errors.GEOSException):
        measurements_batch([obj], [batch], (1.0, 1.0), None)


def test_feature_ids_are_uuid5():
    for key in ("slide-key", "a" * 64, "ünïcode"):
        for object_id in (0, 1, 17, 123456789):
            assert _feature_id(key, object_id) == str(
                uuid.uuid5(_ID_NAMESPACE, f"{key}/{object_id}"))


@st.composite
def _blobs(draw) -> np.ndarray:
    """Up to 4 overlapping or touching disks (radius 0.8-6 px) in a box: mostly one
    outer boundary (the batch path), sometimes holes, necks or several pieces."""
    side = draw(st.integers(3, 18))
    mask = np.zeros((side, draw(st.integers(3, 18))), dtype=bool)
    for _ in range(draw(st.integers(1, 4))):
        centre = (draw(st.floats(0, mask.shape[0] - 1)), draw(st.floats(0, mask.shape[1] - 1)))
        mask |= _disc(draw(st.floats(0.8, 6)), centre, mask.shape)
    return mask


@settings(max_examples=200, deadline=None)
@given(masks=st.lists(_blobs(), min_size=1, max_size=6), top=st.integers(0, 30),
       left=st.integers(0, 30),
       scale=st.sampled_from([(1.0, 1.0), (2.0, 2.0), (1.37, 0.83), (0.5, 0.5)]),
       shrink=st.integers(0, 2))
def test_random_blobs(masks, top, left, scale, shrink):
    objects = [SlideObject(id=k + 1, top=top + k, left=left + 2 * k, mask=m,
                           mean_probability=0.6, class_id=1 + k % 2)
               for k, m in enumerate(masks) if m.any()]
    if not objects:
        return
    size0 = (int(max(o.left + o.mask.shape[1] for o in objects) * scale[0]) - shrink,
             int(max(o.top + o.mask.shape[0] for o in objects) * scale[1]) - shrink)
    _check(objects, scale, size0, 0.5)
