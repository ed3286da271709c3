"""MoNuSeg polygons on the pixel grid: bounds checks and rasterisation.

A pixel belongs to a nucleus when its centre (integer coordinates) lies inside the
polygon, the rule of :func:`skimage.draw.polygon`, which handles fractional vertices
without rounding them first. Real annotations have vertices slightly past the tile edge
(up to about 1000.5 on 1000-pixel tiles); vertices within :data:`BOUNDS_TOLERANCE_PX` of
the image extent ``[0, W] x [0, H]`` are clipped to it, those further out are an error
(:func:`check_regions`).
"""

from __future__ import annotations

import numpy as np
from skimage.draw import polygon as draw_polygon

from sa2_pipeline.datasets.monuseg.aperio import Region

__all__ = ["BOUNDS_TOLERANCE_PX", "check_regions", "polygons_to_instances", "polygons_to_mask"]

#: How far (pixels) a vertex may lie outside the image extent before it is an error.
BOUNDS_TOLERANCE_PX = 1.0


def check_regions(
    regions: list[Region], height: int | None, width: int | None
) -> tuple[list[np.ndarray], list[str]]:
    """Validate parsed regions; clip vertices that are within tolerance of the image.

    Args:
        regions: Parsed regions.
        height: Image height, or None when the image could not be read (bounds unchecked).
        width: Image width, or None.

    Returns:
        ``(polygons, reasons)``: clipped polygons, and one reason per bad region (in
        region order).
    """
    if not regions:
        return [], ["no nucleus polygons (no Annotation/Regions/Region elements)"]
    counts = np.fromiter((len(r.vertices) for r in regions), dtype=np.int64, count=len(regions))
    short = counts < 3
    outside = np.zeros(len(regions), dtype=bool)
    vertices = np.concatenate([r.vertices for r in regions])
    if height is not None and width is not None:
        tol = BOUNDS_TOLERANCE_PX
        x, y = vertices[:, 0], vertices[:, 1]
        beyond = (x < -tol) | (x > width + tol) | (y < -tol) | (y > height + tol)
        owner = np.repeat(np.arange(len(regions)), counts)
        outside[owner[beyond]] = True
        outside &= ~short
        vertices = np.column_stack([np.clip(x, 0.0, width), np.clip(y, 0.0, height)])
    reasons: list[str] = []
    for index in np.flatnonzero(short | outside):
        region = regions[index]
        if short[index]:
            reasons.append(
                f"{region.label}: polygon has {len(region.vertices)} vertices, needs at least 3"
            )
            continue
        x, y = region.vertices[:, 0], region.vertices[:, 1]
        tol = BOUNDS_TOLERANCE_PX
        bad = (x < -tol) | (x > width + tol) | (y < -tol) | (y > height + tol)
        k = int(np.flatnonzero(bad)[0])
        reasons.append(
            f"{region.label}: {int(bad.sum())} of {len(region.vertices)} vertices outside the "
            f"{width}x{height} "
            f"image by more than {tol:g} px, first vertex {k} at "
            f"(x={region.vertices[k, 0]:.2f}, y={region.vertices[k, 1]:.2f})"
        )
    ends = np.cumsum(counts)
    starts = ends - counts
    good = np.flatnonzero(~(short | outside))
    return [vertices[starts[i] : ends[i]] for i in good.tolist()], reasons


def polygons_to_instances(polygons: list[np.ndarray], height: int, width: int) -> np.ndarray:
    """Rasterise polygons into an instance label image.

    A pixel belongs to a polygon when its centre (integer coordinates) lies inside it:
    the pixels of one :func:`skimage.draw.polygon` call per polygon, computed for all
    polygons at once (:func:`_scanline_fill`).

    Args:
        polygons: ``(K, 2)`` arrays of ``(x, y)`` vertices; parts outside the image are cut.
        height: Output height.
        width: Output width.

    Returns:
        int32 ``(height, width)``: 0 = background, polygon ``i`` gets label ``i + 1``;
        where polygons overlap, the later one wins (the highest label covering a pixel).
    """
    labels = np.zeros((height, width), dtype=np.int32)
    _rasterise(labels, polygons, labelled=True)
    return labels


def polygons_to_mask(polygons: list[np.ndarray], height: int, width: int) -> np.ndarray:
    """Rasterise polygons into a binary mask (their union).

    Same pixels as :func:`polygons_to_instances`, i.e. as one
    :func:`skimage.draw.polygon` call per polygon, computed for all polygons at once
    (:func:`_scanline_fill`).

    Args:
        polygons: ``(K, 2)`` arrays of ``(x, y)`` vertices; parts outside the image are cut.
        height: Output height.
        width: Output width.

    Returns:
        uint8 ``(height, width)``: 1 inside any polygon, 0 elsewhere.
    """
    mask = np.zeros((height, width), dtype=np.uint8)
    _rasterise(mask, polygons, labelled=False)
    return mask


def _rasterise(out: np.ndarray, polygons: list[np.ndarray], *, labelled: bool) -> None:
    """Draw ``polygons`` into ``out``: 1 (mask), or polygon ``i``'s ``i + 1`` where it is
    the highest index covering the pixel (``labelled``). Polygons with a tie in the pixel
    rule, or that are not plain finite ``(K >= 3, 2)`` arrays, go to skimage one by one."""
    height, width = out.shape
    arrays = [np.asarray(vertices) for vertices in polygons]
    fast = [
        index
        for index, a in enumerate(arrays)
        if a.ndim == 2 and a.shape[1] == 2 and len(a) >= 3 and a.dtype.kind in "fiu"
    ]
    left = sorted(set(range(len(arrays))).difference(fast))
    if fast and height > 0 and width > 0:
        counts = np.fromiter((len(arrays[i]) for i in fast), dtype=np.int64, count=len(fast))
        vertices = np.concatenate([arrays[i] for i in fast]).astype(np.float64, copy=False)
        finite = np.isfinite(vertices).all(axis=1)
        if not finite.all():
            owner = np.repeat(np.arange(len(fast)), counts)
            ok = np.ones(len(fast), dtype=bool)
            ok[owner[~finite]] = False
            left += [fast[j] for j in np.flatnonzero(~ok)]
            fast = [fast[j] for j in np.flatnonzero(ok)]
            vertices, counts = vertices[ok[owner]], counts[ok]
        if fast:
            values = np.asarray(fast, dtype=np.int64) + 1 if labelled else None
            left += [fast[j] for j in _scanline_fill(out, vertices, counts, values)]
    else:
        left = list(range(len(arrays)))
    for index in sorted(left):  # the rest, exactly as skimage draws them
        vertices = arrays[index]
        rows, cols = draw_polygon(vertices[:, 1], vertices[:, 0], shape=(height, width))
        if labelled:
            out[rows, cols] = np.maximum(out[rows, cols], index + 1)
        else:
            out[rows, cols] = 1


#: A vertex this close to a pixel row (or a crossing this close to a pixel centre, times
#: the coordinate scale) sends its polygon to skimage (see _scanline_fill).
_ROW_TIE = 1e-6
_CROSSING_TIE = 1e-9


def _scanline_fill(mask: np.ndarray, vertices: np.ndarray, counts: np.ndarray,
                   values: np.ndarray | None = None) -> np.ndarray:
    """Set the pixels skimage.draw.polygon would set for each polygon; vectorised.

    skimage tests the pixels ``(r, c)`` of the polygon's bounding box (rounded outwards,
    cut to the image) with O'Rourke's crossing test: a ray from the pixel centre crosses
    the edges whose end points lie on both sides of row ``r``; the pixel is set when it is
    inside, on an edge or on a vertex. Where no vertex lies on row ``r`` (exactly, or
    within :data:`_ROW_TIE`), no crossing is an end point and no pixel is on a vertex, so
    the test reduces to "an odd number of crossings right of the pixel centre", which is
    exact in floating point too whenever the centre is not within
    ``_CROSSING_TIE * scale`` (about 10^5 times the rounding error of the test) of a
    crossing. Those pixels are filled here, as runs between consecutive crossings of each
    polygon row; polygons with a tie anywhere in their bounding box are returned for
    skimage to draw (about 3 % of the nuclei of annotations written with 3 decimals,
    mostly a vertex on an integer row).

    Args:
        mask: ``(H, W)`` mask or label image, updated in place.
        vertices / counts: all polygons' finite ``(x, y)`` vertices; each one's count (>= 3).
        values: Polygon labels; a pixel keeps the highest that covers it. ``None``: 1.

    Returns:
        Indices (into ``counts``) of the polygons left to skimage.
    """
    height, width = mask.shape
    n_polygons = len(counts)
    starts = np.cumsum(counts) - counts
    x, y = vertices[:, 0], vertices[:, 1]
    owner = np.repeat(np.arange(n_polygons), counts)
    previous = np.arange(len(vertices)) - 1
    previous[starts] = starts + counts - 1
    min_row, max_row, min_col, max_col = _boxes(x, y, starts, height, width)
    scale = max(1.0, float(np.abs(vertices).max()), float(height), float(width))

    tied = np.zeros(n_polygons, dtype=bool)
    row_of = np.round(y)
    on_row = np.abs(y - row_of) < max(_ROW_TIE, _CROSSING_TIE * scale)
    on_row &= (row_of >= min_row[owner]) & (row_of <= max_row[owner])
    tied[owner[on_row]] = True

    # every edge (previous -> vertex) crosses the pixel rows strictly between its ends
    y0, x0 = y[previous], x[previous]
    first = np.maximum(np.floor(np.minimum(y0, y)) + 1, min_row[owner])
    last = np.minimum(np.ceil(np.maximum(y0, y)) - 1, max_row[owner])
    n_rows = np.maximum(last - first + 1, 0).astype(np.int64)
    edge = np.repeat(np.arange(len(vertices)), n_rows)
    row = first[edge] + (np.arange(len(edge)) - (np.cumsum(n_rows) - n_rows)[edge])
    ey0, ex0 = y0[edge], x0[edge]
    crossing = ex0 + (x[edge] - ex0) * (row - ey0) / (y[edge] - ey0)
    polygon = owner[edge]
    col_of = np.round(crossing)
    on_centre = np.abs(crossing - col_of) <= _CROSSING_TIE * scale
    on_centre &= (col_of >= min_col[polygon]) & (col_of <= max_col[polygon])
    tied[polygon[on_centre]] = True

    keep = ~tied[polygon]
    _fill_runs(mask, row[keep].astype(np.int64), crossing[keep], polygon[keep], min_col,
               max_col, values)
    return np.flatnonzero(tied)


def _boxes(x: np.ndarray, y: np.ndarray, starts: np.ndarray, height: int,
           width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """skimage's bounding box per polygon: ``int(max(0, min)) .. min(size - 1, ceil(max))``,
    as ``(min_row, max_row, min_col, max_col)``."""
    min_row = np.floor(np.maximum(0.0, np.minimum.reduceat(y, starts)))
    max_row = np.minimum(height - 1.0, np.ceil(np.maximum.reduceat(y, starts)))
    min_col = np.floor(np.maximum(0.0, np.minimum.reduceat(x, starts)))
    max_col = np.minimum(width - 1.0, np.ceil(np.maximum.reduceat(x, starts)))
    return min_row, max_row, min_col, max_col


def _fill_runs(mask: np.ndarray, row: np.ndarray, crossing: np.ndarray, polygon: np.ndarray,
               min_col: np.ndarray, max_col: np.ndarray,
               values: np.ndarray | None = None) -> None:
    """Set the inside pixels of each (polygon, row) given its edge crossings (no ties).

    Args:
        row / crossing / polygon: int64 pixel row, x of the crossing and polygon index of
            every crossing of a polygon's edges with a pixel row.
        min_col / max_col: Each polygon's column range (:func:`_boxes`).
    """
    height, width = mask.shape
    # The first column right of each crossing, within the polygon's box: a pixel is
    # inside when an odd number of these are <= its column, so sorting them per
    # (polygon, row) and pairing them gives the runs [even, odd) of inside pixels.
    toggle = np.clip(np.floor(crossing) + 1, min_col[polygon], max_col[polygon] + 1)
    stride = width + 2
    if len(max_col) * height * stride < 2**62:
        key = np.sort((polygon * height + row) * stride + toggle.astype(np.int64))
        run_row, toggle = (key // stride) % height, key % stride
        run_polygon = key // (stride * height)
    else:  # pragma: no cover - beyond int64 keys
        order = np.lexsort((toggle, row, polygon))
        run_row, toggle = row[order], toggle[order].astype(np.int64)
        run_polygon = polygon[order]
    run_row, begin, end = run_row[0::2], toggle[0::2], toggle[1::2]
    run_polygon = run_polygon[0::2]
    lengths = end - begin
    filled = lengths > 0
    run_row, begin, lengths = run_row[filled], begin[filled], lengths[filled]
    offsets = np.cumsum(lengths) - lengths
    flat = np.repeat(run_row * width + begin - offsets, lengths) + np.arange(int(lengths.sum()))
    if values is None:
        mask.reshape(-1)[flat] = 1
        return
    label = np.repeat(values[run_polygon[filled]], lengths)
    np.maximum.at(mask.reshape(-1), flat, label.astype(mask.dtype))
