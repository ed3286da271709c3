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

    padded = np.pad(mask, 1).astype(np.uint8)
    contours, hierarchy = cv2.findContours(padded, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
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


def measurements(obj: SlideObject, outline, scale: tuple[float, float],
                 mpp: float | None) -> dict[str, float]:
    """The feature's measurements (module docstring); ``outline`` in level-0 px, ``mpp``
    the input's level-0 pixel size or None."""
    area_px = obj.area * scale[0] * scale[1]
    perimeter_px = float(outline.length)
    hull = float(outline.convex_hull.area)
    centroid = outline.centroid
    values: dict[str, float] = {}
    if mpp is None:
        values.update({"area_px2": area_px, "perimeter_px": perimeter_px})
    else:
        values.update({"area_um2": area_px * mpp * mpp, "perimeter_um": perimeter_px * mpp})
    values.update({"centroid_x_px": centroid.x, "centroid_y_px": centroid.y})
    if mpp is not None:
        values.update({"centroid_x_um": centroid.x * mpp, "centroid_y_um": centroid.y * mpp})
    values.update({
        "circularity": min(4 * math.pi * outline.area / perimeter_px**2, 1.0)
        if perimeter_px > 0 else 0.0,
        "solidity": float(outline.area) / hull if hull > 0 else 0.0,
        "mean_probability": obj.mean_probability,
    })
    return {k: round(float(v), 4) for k, v in values.items()}


def _rounded(coordinates: Any) -> Any:
    if isinstance(coordinates, (list, tuple)) and coordinates and isinstance(
            coordinates[0], (int, float)):
        return [round(float(c), 2) for c in coordinates]
    return [_rounded(c) for c in coordinates]


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
        import shapely

        if outline.is_empty:
            return
        name = (self.class_names[obj.class_id - 1] if obj.class_id - 1 < len(self.class_names)
                else f"Class {obj.class_id}")
        geometry = shapely.geometry.mapping(outline)
        feature = {
            "type": "Feature",
            "id": str(uuid.uuid5(_ID_NAMESPACE, f"{self.slide_key}/{obj.id}")),
            "geometry": {"type": geometry["type"],
                         "coordinates": _rounded(geometry["coordinates"])},
            "properties": {
                "objectType": "detection",
                "name": f"{name} {obj.id}",
                "classification": {"name": name, "color": class_colour(obj.class_id)},
                "measurements": values,
            },
        }
        self.handle.write((",\n" if self.count else "") + json.dumps(feature))
        self.count += 1

    def close(self) -> None:
        self.handle.write("\n]}\n")


def read_features(path: Path) -> list[dict[str, Any]]:
    """The features of a GeoJSON file (for tests and small slides)."""
    return json.loads(Path(path).read_text())["features"]
