"""Objects as polygons, and the QuPath GeoJSON file they are written to as the slide streams.

**Outline.** The object's pixels at the inference level are traced with
``cv2.findContours`` (``RETR_CCOMP``: outer boundaries and their holes) through the pixel
centres, and the traced polygon is grown by half a pixel (square caps, mitred joins), which
puts its edges on the pixels' outer edges (one- and two-pixel-wide parts included). An
outline that is not a valid polygon after that is rebuilt as the exact union of the
object's pixel squares. The outline is then simplified (Douglas-Peucker, topology kept) with
a tolerance of :data:`SIMPLIFY_TOLERANCE_PX` = 0.5 px *at the inference level*: no vertex
moves further than half a pixel of the level the model ran at. Last, it is scaled to the
input's level-0 pixels (a pixel's corner is an integer coordinate, as in QuPath), clipped
to the slide's rectangle and snapped to a 0.01 px grid (``shapely.set_precision``, which
keeps it valid; the file holds 2 decimals); every polygon written is shapely-valid and
inside ``[0, width] x [0, height]`` of level 0.

**GeoJSON.** A ``FeatureCollection`` whose features are QuPath detections:
``{"type": "Feature", "id": "<uuid>", "geometry": Polygon | MultiPolygon, "properties":
{"objectType": "detection", "classification": {"name", "color": [r, g, b]},
"measurements": {...}}}``. ``objectType`` sits inside ``properties``, where QuPath reads it
(outside, QuPath would import annotations). The features are written one at a time to a
temporary file that is renamed when the slide is done, so the file never holds half a slide
and no object is ever in memory for longer than it takes to write it.

**Measurements** (names carry their unit: ``um`` when the input's pixel size is known,
``px`` (level-0 pixels) otherwise): ``area``, the object's pixel count times the area of
one pixel of the inference level; ``perimeter``, the outline's length; ``centroid_x``,
``centroid_y`` (of the outline, level-0 px always, plus um when known); ``circularity``
``4 pi area / perimeter^2`` of the outline (1 for a disk); ``solidity``, outline area /
convex-hull area; ``mean_probability``, the model's mean foreground probability over the
object's pixels.
"""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from sa2_pipeline.inference.instances_stream import SlideObject

#: Largest distance a vertex moves when an outline is simplified, in pixels of the level
#: the model ran at.
SIMPLIFY_TOLERANCE_PX = 0.5

#: One fixed colour per class index (QuPath's classification colour), cycling after 10.
CLASS_COLOURS = (
    (0, 200, 0), (200, 0, 0), (0, 90, 255), (255, 160, 0), (160, 0, 200),
    (0, 200, 200), (255, 0, 160), (120, 80, 0), (128, 128, 128), (255, 220, 0),
)

#: Deterministic feature ids: the same slide, model and settings give the same ids.
_ID_NAMESPACE = uuid.UUID("6f1d2a7e-22a0-4c51-9d4e-5a2b0e1c2201")


def class_colour(class_id: int) -> list[int]:
    """The colour of class ``class_id`` (1 = the first foreground class)."""
    return list(CLASS_COLOURS[(class_id - 1) % len(CLASS_COLOURS)])


def pixel_outline(mask: np.ndarray, top: int, left: int):
    """The outline (shapely Polygon or MultiPolygon, holes kept) of the pixels ``mask``
    whose box starts at ``(left, top)``, on the pixels' edges (module docstring)."""
    import cv2
    import shapely
    from shapely.geometry import LineString, Point, Polygon

    contours, hierarchy = cv2.findContours(_padded(mask), cv2.RETR_CCOMP,
                                           cv2.CHAIN_APPROX_SIMPLE)
    offset = np.array([left - 0.5, top - 0.5])  # padded index -> pixel-centre coordinate
    pieces = []
    for i, contour in enumerate(contours):
        if hierarchy[0][i][3] != -1:
            continue
        shell = contour[:, 0, :] + offset
        holes = [contours[j][:, 0, :] + offset for j in range(len(contours))
                 if hierarchy[0][j][3] == i and len(contours[j]) >= 3]
        if len(shell) == 1:
            piece = Point(shell[0])
        elif len(shell) == 2 or Polygon(shell).area == 0:
            piece = LineString(shell) if len(np.unique(shell, axis=0)) > 1 else Point(shell[0])
        else:
            piece = Polygon(shell, holes)
        pieces.append(piece.buffer(0.5, cap_style="square", join_style="mitre"))
    outline = shapely.union_all(pieces) if pieces else Polygon()
    if outline.is_empty or not outline.is_valid or outline.geom_type not in (
            "Polygon", "MultiPolygon"):
        outline = _pixel_union(mask, top, left)
    return outline


def _padded(mask: np.ndarray) -> np.ndarray:
    """``np.pad(mask, 1).astype(np.uint8)``, without ``np.pad``'s overhead for a boolean
    mask (the usual one)."""
    if mask.dtype != bool or mask.ndim != 2:
        return np.pad(mask, 1).astype(np.uint8)
    padded = np.zeros((mask.shape[0] + 2, mask.shape[1] + 2), dtype=np.uint8)
    padded[1:-1, 1:-1] = mask
    return padded


def _pixel_union(mask: np.ndarray, top: int, left: int):
    """The exact union of the pixel squares (slow, always valid)."""
    import shapely

    padded = np.pad(mask, ((0, 0), (1, 1))).astype(np.int8)
    step = np.diff(padded, axis=1)
    rows, starts = np.nonzero(step == 1)
    _, stops = np.nonzero(step == -1)
    return shapely.union_all(shapely.box(starts + left, rows + top, stops + left,
                                         rows + top + 1))


def level0_polygon(obj: SlideObject, scale: tuple[float, float], size0: tuple[int, int]):
    """The object's outline, simplified at its level, in level-0 px, inside the slide."""
    import shapely
    from shapely import affinity
    from shapely.geometry import box

    outline = pixel_outline(obj.mask, obj.top, obj.left)
    simple = outline.simplify(SIMPLIFY_TOLERANCE_PX, preserve_topology=True)
    if simple.is_valid and not simple.is_empty:
        outline = simple
    if scale != (1.0, 1.0):
        outline = affinity.scale(outline, xfact=scale[0], yfact=scale[1], origin=(0, 0))
    slide = box(0, 0, size0[0], size0[1])
    if not slide.contains(outline):
        outline = outline.intersection(slide)
    outline = shapely.set_precision(outline, 0.01)  # what the file holds (2 decimals)
    if not outline.is_valid:
        outline = shapely.make_valid(outline)
    if outline.geom_type == "GeometryCollection":
        outline = shapely.union_all([g for g in outline.geoms
                                     if g.geom_type in ("Polygon", "MultiPolygon")])
    return outline


def _simple_shell(obj: SlideObject) -> np.ndarray | None:
    """The traced outer boundary (pixel-centre coordinates) of an object that
    :func:`pixel_outline` turns into one polygon without holes: one contour in all, of at
    least 3 points and non-zero area. None for every other object."""
    import cv2

    contours, _ = cv2.findContours(_padded(obj.mask), cv2.RETR_CCOMP,
                                   cv2.CHAIN_APPROX_SIMPLE)
    # the area of integer points is exact, and zero exactly when shapely's is
    if len(contours) != 1 or len(contours[0]) < 3 or cv2.contourArea(contours[0]) == 0:
        return None
    return contours[0][:, 0, :] + np.array([obj.left - 0.5, obj.top - 0.5])


def _scaled(scale: tuple[float, float]):
    """``shapely.affinity.scale(g, *scale, origin=(0, 0))``'s arithmetic, for
    ``shapely.transform`` (the same operations, so the same coordinates)."""
    xfact, yfact = scale
    xoff, yoff = 0 - 0 * xfact, 0 - 0 * yfact

    def coordinates(coords: np.ndarray) -> np.ndarray:
        x, y = coords.T
        return np.stack([xfact * x + 0.0 * y + xoff, 0.0 * x + yfact * y + yoff]).T

    return coordinates


def level0_polygons(objects: list[SlideObject], scale: tuple[float, float],
                    size0: tuple[int, int]) -> list:
    """:func:`level0_polygon` of every object, the same geometries, with shapely's
    vectorised functions for the usual object (one outer boundary, no holes) and
    :func:`level0_polygon` itself for the others."""
    return list(_level0_array(objects, scale, size0))


def _level0_array(objects: list[SlideObject], scale: tuple[float, float],
                  size0: tuple[int, int]) -> np.ndarray:
    import shapely
    from shapely.geometry import box

    result = np.empty(len(objects), dtype=object)
    shells, owners = [], []
    for i, obj in enumerate(objects):
        shell = _simple_shell(obj)
        if shell is None:
            result[i] = level0_polygon(obj, scale, size0)
        else:
            shells.append(shell)
            owners.append(i)
    if not shells:
        return result
    owner = np.array(owners)
    rings = shapely.linearrings(np.concatenate(shells), indices=np.repeat(
        np.arange(len(shells)), [len(shell) for shell in shells]))
    # pixel_outline: the polygon grown by half a pixel, through union_all of one piece
    pieces = shapely.buffer(shapely.polygons(rings), 0.5, quad_segs=16, cap_style="square",
                            join_style="mitre", mitre_limit=5.0)
    outlines = shapely.union_all(pieces[:, None], axis=1)
    good = (~shapely.is_empty(outlines) & shapely.is_valid(outlines)
            & np.isin(shapely.get_type_id(outlines), (3, 6)))  # Polygon, MultiPolygon
    for i in owner[~good]:  # pixel_outline rebuilds these from the pixel squares
        result[i] = level0_polygon(objects[i], scale, size0)
    outlines, owner = outlines[good], owner[good]
    # level0_polygon, step by step on the arrays
    simple = shapely.simplify(outlines, SIMPLIFY_TOLERANCE_PX, preserve_topology=True)
    outlines = np.where(shapely.is_valid(simple) & ~shapely.is_empty(simple), simple,
                        outlines)
    if scale != (1.0, 1.0):
        empty = shapely.is_empty(outlines)  # affinity.scale returns those as they are
        outlines = np.where(empty, outlines, shapely.transform(outlines, _scaled(scale)))
    slide = box(0, 0, size0[0], size0[1])
    for k in np.flatnonzero(~shapely.contains(slide, outlines)):
        outlines[k] = outlines[k].intersection(slide)
    outlines = shapely.set_precision(outlines, 0.01)
    for k in np.flatnonzero(~shapely.is_valid(outlines)):
        outlines[k] = shapely.make_valid(outlines[k])
    for k in np.flatnonzero(shapely.get_type_id(outlines) == 7):  # GeometryCollection
        outlines[k] = shapely.union_all([g for g in outlines[k].geoms
                                         if g.geom_type in ("Polygon", "MultiPolygon")])
    result[owner] = outlines
    return result


def measurements(obj: SlideObject, outline, scale: tuple[float, float],
                 mpp: float | None) -> dict[str, float]:
    """The feature's measurements (module docstring); ``outline`` in level-0 px, ``mpp``
    the input's level-0 pixel size or None."""
    centroid = outline.centroid
    return _measurements(obj.area, obj.mean_probability, float(outline.length),
                         float(outline.convex_hull.area), centroid.x, centroid.y,
                         outline.area, scale, mpp)


def measurements_batch(objects: list[SlideObject], outlines: list,
                       scale: tuple[float, float], mpp: float | None,
                       pixel_counts: list[int] | None = None) -> list[dict[str, float]]:
    """:func:`measurements` of every object and its outline (the same dictionaries), with
    shapely's vectorised functions; ``pixel_counts``: the objects' ``area`` if known."""
    import shapely

    if not len(objects):
        return []
    geometries = np.empty(len(outlines), dtype=object)
    geometries[:] = outlines
    empty = shapely.is_empty(geometries).tolist()  # measurements() of those as they are
    perimeter = shapely.length(geometries).tolist()
    hull = shapely.area(shapely.convex_hull(geometries)).tolist()
    centroids = shapely.centroid(geometries)
    centroids[np.array(empty)] = None  # get_x, get_y: NaN (an empty point would raise)
    cx, cy = shapely.get_x(centroids).tolist(), shapely.get_y(centroids).tolist()
    area = shapely.area(geometries).tolist()
    counts = [obj.area for obj in objects] if pixel_counts is None else pixel_counts
    return [measurements(obj, outlines[i], scale, mpp) if empty[i] else
            _measurements(counts[i], obj.mean_probability, perimeter[i], hull[i], cx[i], cy[i],
                          area[i], scale, mpp) for i, obj in enumerate(objects)]


def _measurements(pixels: int, mean_probability: float, perimeter_px: float, hull: float,
                  centroid_x: float, centroid_y: float, outline_area: float,
                  scale: tuple[float, float], mpp: float | None) -> dict[str, float]:
    area_px = pixels * scale[0] * scale[1]
    centroid_x, centroid_y = float(centroid_x), float(centroid_y)
    values: dict[str, float] = {}
    if mpp is None:
        values.update({"area_px2": area_px, "perimeter_px": perimeter_px})
    else:
        values.update({"area_um2": area_px * mpp * mpp, "perimeter_um": perimeter_px * mpp})
    values.update({"centroid_x_px": centroid_x, "centroid_y_px": centroid_y})
    if mpp is not None:
        values.update({"centroid_x_um": centroid_x * mpp, "centroid_y_um": centroid_y * mpp})
    values.update({
        "circularity": min(4 * math.pi * outline_area / perimeter_px**2, 1.0)
        if perimeter_px > 0 else 0.0,
        "solidity": float(outline_area) / hull if hull > 0 else 0.0,
        "mean_probability": mean_probability,
    })
    return {k: round(float(v), 4) for k, v in values.items()}


def _rounded(coordinates: Any) -> Any:
    if isinstance(coordinates, (list, tuple)) and coordinates and isinstance(
            coordinates[0], (int, float)):
        return [round(float(c), 2) for c in coordinates]
    return [_rounded(c) for c in coordinates]


def _geometries(outlines: np.ndarray) -> list[dict[str, Any] | None]:
    """``{"type", "coordinates"}`` of every outline as :meth:`GeoJSONWriter.write` writes
    it (``mapping``, coordinates through :func:`_rounded`; None: empty), from one array of
    all the polygons' coordinates. A coordinate already on the 0.01 grid (``set_precision``
    put it there) is its own ``round(c, 2)``: ``np.round(c, 2) == c`` says it is."""
    import shapely

    found: list[dict[str, Any] | None] = [None] * len(outlines)
    polygon = np.flatnonzero((shapely.get_type_id(outlines) == 3) & ~shapely.is_empty(outlines))
    if len(polygon):
        rings, ring_owner = shapely.get_rings(outlines[polygon], return_index=True)
        coords, point_ring = shapely.get_coordinates(rings, return_index=True)
        off_grid = np.bincount(ring_owner[point_ring[(np.round(coords, 2) != coords).any(1)]],
                               minlength=len(polygon))
        points = coords.tolist()
        ring_stop = np.cumsum(np.bincount(point_ring, minlength=len(rings))).tolist()
        ring_start = [0, *ring_stop[:-1]]
        polygon_stop = np.cumsum(np.bincount(ring_owner, minlength=len(polygon))).tolist()
        first_ring = 0
        for j, k in enumerate(polygon.tolist()):
            if not off_grid[j]:
                found[k] = {"type": "Polygon", "coordinates": [
                    points[ring_start[r]:ring_stop[r]]
                    for r in range(first_ring, polygon_stop[j])]}
            first_ring = polygon_stop[j]
    for k in range(len(outlines)):
        if found[k] is None and not outlines[k].is_empty:
            geometry = shapely.geometry.mapping(outlines[k])
            found[k] = {"type": geometry["type"],
                        "coordinates": _rounded(geometry["coordinates"])}
    return found


def _feature_id(slide_key: str, object_id: int) -> str:
    """``str(uuid.uuid5(_ID_NAMESPACE, f"{slide_key}/{object_id}"))``, without the
    ``UUID`` object."""
    digest = bytearray(hashlib.sha1(_ID_NAMESPACE.bytes
                                    + f"{slide_key}/{object_id}".encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class GeoJSONWriter:
    """Writes detections one by one to an open text file (module docstring).

    Args:
        handle: The (temporary) file, open for writing text.
        slide_key: Part of every feature's id (e.g. the input's SHA-256), so that ids are
            unique across slides and the same on a rerun.
        class_names: Name of class ``k`` at index ``k - 1``.
    """

    def __init__(self, handle, slide_key: str, class_names: list[str]) -> None:
        self.handle = handle
        self.slide_key = slide_key
        self.class_names = class_names
        self.count = 0
        handle.write('{"type": "FeatureCollection", "features": [\n')

    def write(self, obj: SlideObject, outline, values: dict[str, float]) -> None:
        outlines = np.empty(1, dtype=object)
        outlines[0] = outline
        self.write_many([obj], outlines, [values])

    def write_many(self, objects: list[SlideObject], outlines,
                   values: list[dict[str, float]]) -> None:
        """:meth:`write` of every object in turn (the same text), its outline in
        ``outlines`` (a list or array) and its measurements in ``values``."""
        if not len(objects):
            return
        array = np.empty(len(outlines), dtype=object)
        array[:] = outlines
        for obj, geometry, measured in zip(objects, _geometries(array), values,
                                                  strict=True):
            if geometry is not None:
                self.handle.write((",\n" if self.count else "")
                                  + json.dumps(self._feature(obj, geometry, measured)))
                self.count += 1

    def _feature(self, obj: SlideObject, geometry: dict[str, Any],
                 values: dict[str, float]) -> dict[str, Any]:
        name = (self.class_names[obj.class_id - 1] if obj.class_id - 1 < len(self.class_names)
                else f"Class {obj.class_id}")
        return {
            "type": "Feature",
            "id": _feature_id(self.slide_key, obj.id),
            "geometry": geometry,
            "properties": {
                "objectType": "detection",
                "name": f"{name} {obj.id}",
                "classification": {"name": name, "color": class_colour(obj.class_id)},
                "measurements": values,
            },
        }

    def close(self) -> None:
        self.handle.write("\n]}\n")


def read_features(path: Path) -> list[dict[str, Any]]:
    """The features of a GeoJSON file (for tests and small slides)."""
    return json.loads(Path(path).read_text())["features"]
