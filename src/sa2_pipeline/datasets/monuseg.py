"""MoNuSeg 2018 adapter: the published layout, TIFF tiles + Aperio ImageScope XML.

Layout, exactly as the two archives unpack (``root`` holds both folders)::

    <root>/MoNuSeg 2018 Training Data/Tissue Images/<stem>.tif
    <root>/MoNuSeg 2018 Training Data/Annotations/<stem>.xml
    <root>/MoNuSegTestData/<stem>.tif
    <root>/MoNuSegTestData/<stem>.xml

Annotation files are Aperio ImageScope XML with one ``Region`` polygon per nucleus::

    Annotations/Annotation/Regions/Region/Vertices/Vertex[@X, @Y]

Coordinate convention: ``X`` is the column and ``Y`` the row, in pixels, with pixel
centres at integer coordinates. A pixel belongs to a nucleus when its centre lies inside
the polygon (:func:`skimage.draw.polygon`), which handles fractional vertices without
rounding them first. Real annotations have vertices slightly past the tile edge (up to
about 1000.5 on 1000-pixel tiles); vertices within :data:`BOUNDS_TOLERANCE_PX` of the
image extent ``[0, W] x [0, H]`` are clipped to it, those further out are an error.

Image policy: RGB uint8 tiles are taken as they are; RGBA drops the alpha channel
(ImageScope exports carry an opaque alpha); grayscale or non-uint8 tiles are rejected,
since an H&E dataset with such a tile holds the wrong file and guessing a conversion would
hide that.
"""

from __future__ import annotations

import io
import logging
import multiprocessing
import os
import re
import sys
import threading
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
from skimage.draw import polygon as draw_polygon

from sa2_pipeline.datasets.base import (
    MANIFEST_COLUMNS,
    DatasetValidationError,
    IngestedDataset,
    RawSample,
    duplicate_ids,
    sha256_array,
    sha256_file,
    warn_unread,
)

logger = logging.getLogger(__name__)

__all__ = [
    "BOUNDS_TOLERANCE_PX",
    "default_workers",
    "format_aperio_xml",
    "TEST_DIR",
    "TRAIN_ANNOTATION_DIR",
    "TRAIN_IMAGE_DIR",
    "load_monuseg",
    "polygons_to_instances",
    "polygons_to_mask",
    "read_aperio_polygons",
    "scan_monuseg",
]

#: Training images, relative to the dataset root (folder names as published).
TRAIN_IMAGE_DIR = Path("MoNuSeg 2018 Training Data") / "Tissue Images"
#: Training annotations, relative to the dataset root.
TRAIN_ANNOTATION_DIR = Path("MoNuSeg 2018 Training Data") / "Annotations"
#: Test images and annotations (same folder), relative to the dataset root.
TEST_DIR = Path("MoNuSegTestData")
#: How far (pixels) a vertex may lie outside the image extent before it is an error.
BOUNDS_TOLERANCE_PX = 1.0

_IMAGE_SUFFIXES = {".tif", ".tiff"}
_ANNOTATION_SUFFIX = ".xml"

Problem = tuple[str, str]


# --------------------------------------------------------------------------- scanning


def _list_files(folder: Path, suffixes: set[str]) -> dict[str, list[Path]]:
    """Files in ``folder`` with one of ``suffixes`` (case-insensitive), grouped by stem.

    Hidden files (``.*``, e.g. macOS ``._x.tif`` resource forks) are skipped.
    """
    found: dict[str, list[Path]] = defaultdict(list)
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            name_ok = not path.name.startswith(".") and path.suffix.lower() in suffixes
            if path.is_file() and name_ok:
                found[path.stem].append(path)
    return found


def _scan_layout(root: Path) -> tuple[list[RawSample], list[Problem]]:
    """Pair images with annotations; report layout and pairing problems.

    Returns:
        ``(samples, problems)``: one sample per image found (its ``annotation_path`` is
        the expected path, which may be missing; that is then also a problem), and every
        layout/pairing problem.
    """
    root = Path(root)
    train_images_dir = root / TRAIN_IMAGE_DIR
    train_xml_dir = root / TRAIN_ANNOTATION_DIR
    test_dir = root / TEST_DIR
    expected = (
        f"looked for training tiles '*.tif' in '{train_images_dir}' with same-stem '*.xml' "
        f"in '{train_xml_dir}', and test '*.tif' + '*.xml' pairs in '{test_dir}'"
    )
    if not root.is_dir():
        return [], [(str(root), f"raw dataset folder does not exist; {expected}")]
    train_present = train_images_dir.is_dir() or train_xml_dir.is_dir()
    test_present = test_dir.is_dir()
    if not train_present and not test_present:
        return [], [(str(root), f"no MoNuSeg folders found; {expected}")]

    problems: list[Problem] = []
    samples: list[RawSample] = []
    used: set[Path] = set()
    groups = [
        ("train", train_images_dir, train_xml_dir),
        ("test", test_dir, test_dir),
    ]
    for split, image_dir, xml_dir in groups:
        images, annotations = {}, {}
        for found, chosen in (
            (_list_files(image_dir, _IMAGE_SUFFIXES), images),
            (_list_files(xml_dir, {_ANNOTATION_SUFFIX}), annotations),
        ):
            for paths in found.values():
                used.update(paths)
                chosen[paths[0].stem] = paths[0]
                problems += [
                    (str(p), f"same stem as {paths[0]}; ids must be unique") for p in paths[1:]
                ]
        if (image_dir.is_dir() or xml_dir.is_dir()) and not images:
            problems.append((str(image_dir), f"no '*.tif' images found ({split} split)"))
        for stem, image_path in images.items():
            xml_path = annotations.get(stem, xml_dir / f"{stem}{_ANNOTATION_SUFFIX}")
            if stem not in annotations:
                problems.append((str(image_path), f"missing annotation {xml_path}"))
            samples.append(RawSample(stem, split, image_path, xml_path))
        for stem, xml_path in annotations.items():
            if stem not in images:
                problems.append(
                    (
                        str(xml_path),
                        f"annotation without image (expected {image_dir / (stem + '.tif')})",
                    )
                )
    if not train_present:
        logger.warning(
            "MoNuSeg at %s: no training folder '%s'; test split only", root, TRAIN_IMAGE_DIR
        )
    if not test_present:
        logger.warning("MoNuSeg at %s: no test folder '%s'; training split only", root, TEST_DIR)
    warn_unread("MoNuSeg", root, (train_images_dir, train_xml_dir, test_dir), used)
    problems += duplicate_ids((s.id, s.image_path) for s in samples)
    return samples, problems


def scan_monuseg(root: Path) -> list[RawSample]:
    """Find the image/annotation pairs of a MoNuSeg 2018 download.

    Only the layout is checked here (folders, pairs, ids); file contents are verified by
    :func:`load_monuseg`.

    Args:
        root: Folder that holds ``MoNuSeg 2018 Training Data/`` and/or
            ``MoNuSegTestData/``.

    Returns:
        One :class:`RawSample` per image, training split first, each sorted by id.

    Raises:
        DatasetValidationError: Neither folder exists, a folder holds no ``*.tif``, an
            image has no annotation or an annotation no image, or ids collide. Every
            problem is listed.
    """
    samples, problems = _scan_layout(Path(root))
    if problems:
        raise DatasetValidationError(problems, root)
    return samples


# --------------------------------------------------------------------------- annotations


class _AnnotationError(ValueError):
    """An annotation file that cannot be parsed at all."""


@dataclass(frozen=True)
class _Region:
    label: str  # e.g. "region #3 (Id=4)", used in error messages
    vertices: np.ndarray  # (K, 2) float64, columns x, y


def _parse_aperio(xml_path: Path) -> list[_Region]:
    """Parse every ``Region`` of an Aperio ImageScope XML file.

    Reads the file once; :func:`_parse_aperio_fast` handles the usual layout, anything it
    does not vouch for goes through :func:`_parse_aperio_tree` (same result, same errors).

    Raises:
        _AnnotationError: Not parseable, wrong root element, or a non-numeric vertex.
    """
    try:
        data = Path(xml_path).read_bytes()
    except OSError as err:
        raise _AnnotationError(f"unreadable annotation file: {err}") from err
    regions = _parse_aperio_fast(data)
    return regions if regions is not None else _parse_aperio_tree(data)


def _parse_aperio_tree(data: bytes) -> list[_Region]:
    """The reference parser: the whole document through ElementTree, vertex by vertex."""
    try:
        xml_root = ET.parse(io.BytesIO(data)).getroot()
    except ET.ParseError as err:
        raise _AnnotationError(f"malformed XML: {err}") from err
    _check_root(xml_root)
    regions: list[_Region] = []
    for index, region in enumerate(xml_root.iterfind(_REGION_PATH)):
        label = _region_label(index, region)
        coords: list[tuple[float, float]] = []
        for k, vertex in enumerate(region.iterfind("./Vertices/Vertex")):
            try:
                x, y = float(vertex.attrib["X"]), float(vertex.attrib["Y"])
            except (KeyError, ValueError) as err:
                raise _AnnotationError(
                    f"{label}: vertex {k} has no numeric X/Y attributes ({vertex.attrib})"
                ) from err
            coords.append((x, y))
        regions.append(_Region(label, _finite(label, np.asarray(coords, dtype=np.float64))))
    return regions


_REGION_PATH = "./Annotation/Regions/Region"
_XML_SPACE = b" \t\r\n"
_NUMBER_BYTES = b"0123456789.+-eE"
_BLOCK_OPEN, _BLOCK_CLOSE = b"<Vertices>", b"</Vertices>"
_BLOCK_MARK = "sa2-vertex-block"
_S = rb"[ \t\r\n]"
_FIELD_SEPARATORS = {  # between the '"'-split fields of a run of <Vertex .../> elements
    "head": re.compile(_S + rb"*<Vertex" + _S + rb"+X" + _S + rb"*=" + _S + rb"*"),
    "y": re.compile(_S + rb"+Y" + _S + rb"*=" + _S + rb"*"),
    "z": re.compile(_S + rb"+Z" + _S + rb"*=" + _S + rb"*"),
    "next": re.compile(_S + rb"*/>" + _S + rb"*<Vertex" + _S + rb"+X" + _S + rb"*=" + _S + rb"*"),
    "tail": re.compile(_S + rb"*/>" + _S + rb"*"),
}
_XML_DECLARATION = re.compile(rb"<\?xml[^>]*?\?>")
_ENCODING = re.compile(rb"""encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")
_FAST_ENCODINGS = {"utf-8", "utf8", "us-ascii", "ascii", "iso-8859-1", "latin-1", "latin1"}


def _parse_aperio_fast(data: bytes) -> list[_Region] | None:
    """Parse the usual ImageScope layout quickly, or return None to leave it to ElementTree.

    Every ``<Vertices>...</Vertices>`` element whose content is nothing but
    ``<Vertex X="..." Y="..." [Z="..."]/>`` elements (numeric values written with
    ``0-9 . + - e E``, double quotes, XML white space) is read in bulk from the bytes and
    replaced by an empty placeholder; ElementTree parses what is left (the regions and
    their attributes, a few elements per nucleus). The result is then identical to
    :func:`_parse_aperio_tree`'s: such content is well-formed and its attribute values
    are the raw text. None (use the reference parser) for anything else: comments, CDATA,
    DOCTYPE or processing instructions, an unusual encoding, single quotes, a value that
    is not a plain number, any error.
    """
    body = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
    declaration = _XML_DECLARATION.match(body)
    if declaration is not None:
        encoding = _ENCODING.search(declaration.group())
        if encoding is not None and encoding.group(1).decode().lower() not in _FAST_ENCODINGS:
            return None
        body = body[declaration.end() :]
    if b"<!" in body or b"<?" in body or _BLOCK_MARK.encode() in body:
        return None
    parts = body.split(_BLOCK_OPEN)
    blocks: list[bytes] = []
    skeleton = [data[: len(data) - len(body)], parts[0]]
    for part in parts[1:]:
        inner, closed, rest = part.partition(_BLOCK_CLOSE)
        content = inner.strip(_XML_SPACE)
        if not closed or (content and not (content.startswith(b"<") and content.endswith(b"/>"))):
            return None  # each block must hold whole elements (see _read_vertex_runs)
        skeleton += [b'<Vertices %s="%d"/>' % (_BLOCK_MARK.encode(), len(blocks)), rest]
        blocks.append(inner)
    runs = _read_vertex_runs(blocks)
    if runs is None:
        return None
    vertices, all_finite = runs
    try:
        xml_root = ET.fromstring(b"".join(skeleton))
    except ET.ParseError:
        return None  # the reference parser reports it, with the original's line numbers
    if xml_root.tag != "Annotations" or next(xml_root.iter("Vertex"), None) is not None:
        return None
    regions: list[_Region] = []
    for index, region in enumerate(xml_root.iterfind(_REGION_PATH)):
        found = [child.get(_BLOCK_MARK) for child in region.findall("Vertices")]
        if len(found) == 1 and found[0] is not None:
            coords = vertices[int(found[0])]
        elif None in found:
            return None  # a <Vertices> element that is not one of the blocks
        else:
            coords = np.concatenate([vertices[int(i)] for i in found] or [_NO_VERTICES])
        label = _region_label(index, region)
        if not all_finite and not np.isfinite(coords).all():
            raise _AnnotationError(f"{label}: non-finite vertex coordinates")
        regions.append(_Region(label, coords))
    return regions


_NO_VERTICES = np.empty((0, 2), dtype=np.float64)


def _read_vertex_runs(blocks: list[bytes]) -> tuple[list[np.ndarray], bool] | None:
    """``(K, 2)`` float64 vertices of each block and whether all are finite, or None if a
    block is not a plain run of vertex elements.

    The blocks are joined and split at the double quotes: a run of ``n`` vertex elements
    gives ``p * n + 1`` fields (p = 4 without ``Z``, 6 with), values at the odd positions
    and fixed separators (``<Vertex X=``, `` Y=``, ``/>``, white space) in between.
    """
    joined = b"".join(blocks)
    n = joined.count(b"<")
    if n == 0:
        return [_NO_VERTICES] * len(blocks), True
    fields = joined.split(b'"')
    period = 6 if len(fields) > 5 and _FIELD_SEPARATORS["z"].fullmatch(fields[4]) else 4
    if len(fields) != period * n + 1:
        return None
    expected = [
        ("head", fields[:1]),
        ("y", fields[2::period]),
        ("next", fields[period:-1:period]),
        ("tail", fields[-1:]),
    ]
    if period == 6:
        expected.append(("z", fields[4::period]))
    for name, separators in expected:
        pattern = _FIELD_SEPARATORS[name]
        if not all(pattern.fullmatch(sep) for sep in set(separators)):
            return None
    values = fields[1::2]
    if b"".join(values).translate(None, _NUMBER_BYTES):
        return None  # white space, entities, names: leave the exact reading to ElementTree
    xy = fields[1::period] + fields[3::period]  # all X, then all Y
    try:
        flat = np.fromiter(map(float, xy), dtype=np.float64, count=2 * n)
    except ValueError:
        return None
    coords = np.column_stack([flat[:n], flat[n:]])
    ends = np.cumsum([block.count(b"<") for block in blocks]).tolist()
    pieces = [coords[start:end] for start, end in zip([0, *ends[:-1]], ends, strict=True)]
    return pieces, bool(np.isfinite(flat).all())


def _check_root(xml_root: ET.Element) -> None:
    if xml_root.tag != "Annotations":
        raise _AnnotationError(
            f"not an Aperio ImageScope annotation: root element <{xml_root.tag}>, "
            "expected <Annotations>"
        )


def _region_label(index: int, region: ET.Element) -> str:
    region_id = region.get("Id")
    return f"region #{index}" + (f" (Id={region_id})" if region_id is not None else "")


def _finite(label: str, coords: np.ndarray) -> np.ndarray:
    vertices = coords.reshape(-1, 2)
    if not np.isfinite(vertices).all():
        raise _AnnotationError(f"{label}: non-finite vertex coordinates")
    return vertices


def read_aperio_polygons(xml_path: Path) -> list[np.ndarray]:
    """Read the nucleus polygons of an Aperio ImageScope XML file.

    ``Attributes``, ``RegionAttributeHeaders`` and ``Plots`` elements are ignored.

    Args:
        xml_path: Annotation file.

    Returns:
        One ``(K, 2)`` float64 array of ``(x, y)`` vertices per ``Region``, in file order
        (not validated: see :func:`load_monuseg` for vertex-count and bounds checks).

    Raises:
        DatasetValidationError: The file is unreadable, not XML, not an Aperio
            annotation, or has a non-numeric vertex.
    """
    try:
        return [region.vertices for region in _parse_aperio(Path(xml_path))]
    except _AnnotationError as err:
        raise DatasetValidationError([(str(xml_path), str(err))]) from err


def format_aperio_xml(polygons: list[np.ndarray], decimals: int = 3) -> str:
    """Aperio ImageScope XML text with one ``Region`` per polygon, as in MoNuSeg.

    The inverse of :func:`read_aperio_polygons` (up to ``decimals`` rounding): includes
    the ``Attributes``, ``RegionAttributeHeaders`` and ``Plots`` elements real files have.

    Args:
        polygons: ``(K, 2)`` arrays of ``(x, y)`` vertices.
        decimals: Digits after the decimal point written for each coordinate.

    Returns:
        The XML document.
    """
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<Annotations MicronsPerPixel="0.252000">',
        '<Annotation Id="1" Name="" ReadOnly="0" NameReadOnly="0" LineColorReadOnly="0" '
        'Incremental="0" Type="4" LineColor="65280" Visible="1" Selected="1" '
        'MarkupImagePath="" MacroName="">',
        "<Attributes>",
        '<Attribute Name="Description" Id="0" Value=""/>',
        "</Attributes>",
        "<Regions>",
        "<RegionAttributeHeaders>",
        '<AttributeHeader Id="9999" Name="Region" ColumnWidth="-1"/>',
        '<AttributeHeader Id="9997" Name="Length" ColumnWidth="-1"/>',
        '<AttributeHeader Id="9996" Name="Area" ColumnWidth="-1"/>',
        "</RegionAttributeHeaders>",
    ]
    vertex_line = f'<Vertex X="%.{decimals}f" Y="%.{decimals}f" Z="0"/>'
    for index, polygon in enumerate(polygons, start=1):
        vertices = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
        closed = np.vstack([vertices, vertices[:1]])
        x, y = closed[:, 0], closed[:, 1]
        area = 0.5 * abs(float(x[:-1] @ y[1:] - y[:-1] @ x[1:]))
        length = float(np.hypot(np.diff(x), np.diff(y)).sum())
        lines.append(
            f'<Region Id="{index}" Type="0" Zoom="1" Selected="0" ImageLocation="" '
            f'ImageFocus="-1" Length="{length:.1f}" Area="{area:.1f}" Text="" '
            f'NegativeROA="0" InputRegionId="0" Analyze="1" DisplayId="{index}">'
        )
        lines.append("<Attributes/>")
        lines.append("<Vertices>")
        lines += [vertex_line % (vx, vy) for vx, vy in vertices.tolist()]
        lines.append("</Vertices>")
        lines.append("</Region>")
    lines += ["</Regions>", "<Plots/>", "</Annotation>", "</Annotations>", ""]
    return "\n".join(lines)


def _check_regions(
    regions: list[_Region], height: int | None, width: int | None
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


# --------------------------------------------------------------------------- rasterising


def polygons_to_instances(polygons: list[np.ndarray], height: int, width: int) -> np.ndarray:
    """Rasterise polygons into an instance label image.

    A pixel belongs to a polygon when its centre (integer coordinates) lies inside it.

    Args:
        polygons: ``(K, 2)`` arrays of ``(x, y)`` vertices; parts outside the image are cut.
        height: Output height.
        width: Output width.

    Returns:
        int32 ``(height, width)``: 0 = background, polygon ``i`` gets label ``i + 1``;
        where polygons overlap, the later one wins.
    """
    labels = np.zeros((height, width), dtype=np.int32)
    for index, vertices in enumerate(polygons):
        rows, cols = draw_polygon(vertices[:, 1], vertices[:, 0], shape=(height, width))
        labels[rows, cols] = index + 1
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
            left += [fast[j] for j in _scanline_fill(mask, vertices, counts)]
    else:
        left = list(range(len(arrays)))
    for index in left:  # the rest, exactly as skimage draws them
        vertices = arrays[index]
        rows, cols = draw_polygon(vertices[:, 1], vertices[:, 0], shape=(height, width))
        mask[rows, cols] = 1
    return mask


#: A vertex this close to a pixel row (or a crossing this close to a pixel centre, times
#: the coordinate scale) sends its polygon to skimage (see _scanline_fill).
_ROW_TIE = 1e-6
_CROSSING_TIE = 1e-9


def _scanline_fill(mask: np.ndarray, vertices: np.ndarray, counts: np.ndarray) -> np.ndarray:
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
        mask: uint8 ``(H, W)`` mask, updated in place.
        vertices: finite ``(x, y)`` vertices of all polygons, one after the other.
        counts: vertices per polygon, each at least 3.

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
    # skimage's bounding box: int(max(0, min)) .. min(size - 1, ceil(max)), per polygon
    min_row = np.floor(np.maximum(0.0, np.minimum.reduceat(y, starts)))
    max_row = np.minimum(height - 1.0, np.ceil(np.maximum.reduceat(y, starts)))
    min_col = np.floor(np.maximum(0.0, np.minimum.reduceat(x, starts)))
    max_col = np.minimum(width - 1.0, np.ceil(np.maximum.reduceat(x, starts)))
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
    row, crossing, polygon = row[keep].astype(np.int64), crossing[keep], polygon[keep]
    # The first column right of each crossing, within the polygon's box: a pixel is
    # inside when an odd number of these are <= its column, so sorting them per
    # (polygon, row) and pairing them gives the runs [even, odd) of inside pixels.
    toggle = np.clip(np.floor(crossing) + 1, min_col[polygon], max_col[polygon] + 1)
    stride = width + 2
    if n_polygons * height * stride < 2**62:
        key = np.sort((polygon * height + row) * stride + toggle.astype(np.int64))
        run_row, toggle = (key // stride) % height, key % stride
    else:  # pragma: no cover - beyond int64 keys
        order = np.lexsort((toggle, row, polygon))
        run_row, toggle = row[order], toggle[order].astype(np.int64)
    run_row, begin, end = run_row[0::2], toggle[0::2], toggle[1::2]
    lengths = end - begin
    filled = lengths > 0
    run_row, begin, lengths = run_row[filled], begin[filled], lengths[filled]
    offsets = np.cumsum(lengths) - lengths
    flat = np.repeat(run_row * width + begin - offsets, lengths) + np.arange(int(lengths.sum()))
    mask.reshape(-1)[flat] = 1
    return np.flatnonzero(tied)


# --------------------------------------------------------------------------- images


def _read_rgb_tiff(path: Path) -> np.ndarray:
    """Read a TIFF tile as RGB uint8 ``(H, W, 3)``.

    Raises:
        ValueError: Unreadable, or not an RGB/RGBA uint8 image; the message is the reason.
    """
    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise ValueError("unreadable TIFF: no image data")
            series = tif.series[0]
            axes = series.axes
            image = series.asarray()
    except ValueError as err:
        if str(err).startswith("unreadable TIFF"):
            raise
        raise ValueError(f"unreadable TIFF: {err}") from err
    except Exception as err:  # tifffile/codecs raise many types (zlib.error, struct.error, ...)
        raise ValueError(f"unreadable TIFF: {type(err).__name__}: {err}") from err

    if image.ndim == 3 and axes.endswith("SYX") and image.shape[0] in (3, 4):
        image = np.moveaxis(image, 0, -1)  # planar configuration -> interleaved
    if image.ndim == 4 and image.shape[0] == 1:
        image = image[0]
    if image.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {image.dtype} (shape {image.shape})")
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise ValueError(
            f"expected an RGB or RGBA image (H, W, 3|4), got shape {image.shape} "
            f"(axes {axes!r}); grayscale tiles are not accepted for H&E"
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"empty image of shape {image.shape}")
    return np.ascontiguousarray(image[..., :3])


# --------------------------------------------------------------------------- loading


@dataclass
class _FileResult:
    """What reading one image/annotation pair found (computed in a worker process)."""

    image: np.ndarray | None
    image_problem: str | None
    annotation_problems: list[str]
    mask: np.ndarray | None  # None unless image and annotation are both good
    pixels_sha256: str | None
    image_sha256: str | None


def _read_pair(sample: RawSample) -> _FileResult:
    """Read, verify and rasterise one pair; every problem is returned, none raised."""
    image: np.ndarray | None = None
    image_problem = None
    try:
        image = _read_rgb_tiff(sample.image_path)
    except ValueError as err:
        image_problem = str(err)
    height, width = (image.shape[0], image.shape[1]) if image is not None else (None, None)

    polygons: list[np.ndarray] = []
    reasons: list[str] = []
    annotation_ok = False
    if sample.annotation_path.is_file():
        try:
            regions = _parse_aperio(sample.annotation_path)
        except _AnnotationError as err:
            reasons = [str(err)]
        else:
            polygons, reasons = _check_regions(regions, height, width)
            annotation_ok = not reasons
    mask = None
    if image is not None and annotation_ok:
        mask = polygons_to_mask(polygons, image.shape[0], image.shape[1])
    return _FileResult(
        image=image,
        image_problem=image_problem,
        annotation_problems=reasons,
        mask=mask,
        pixels_sha256=sha256_array(image) if image is not None else None,
        image_sha256=sha256_file(sample.image_path) if image is not None else None,
    )


#: Below this many bytes of raw files, starting worker processes costs more than it saves.
_POOL_MIN_BYTES = 16_000_000


def default_workers() -> int:
    """``min(4, usable CPU cores)``: the default number of processes :func:`load_monuseg` uses."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


def _fork_context() -> multiprocessing.context.BaseContext | None:
    """The "fork" start method where forking is safe: Linux, no other Python thread.

    Forked workers start in milliseconds and import nothing; "spawn" and "forkserver"
    would re-import the caller's ``__main__`` in every worker (impossible for stdin,
    slow for the Kedro CLI). A process running other threads (a notebook kernel, a
    threaded runner) could deadlock a forked child, so it reads in-process instead.
    """
    if not sys.platform.startswith("linux") or threading.active_count() > 1:
        return None
    return multiprocessing.get_context("fork")


def _read_pairs(samples: list[RawSample], workers: int) -> Iterator[_FileResult]:
    """:func:`_read_pair` of every sample, in order; in ``workers`` processes if it pays."""
    context = _fork_context() if workers > 1 and len(samples) > 1 else None
    if context is not None:
        size = sum(
            path.stat().st_size
            for sample in samples
            for path in (sample.image_path, sample.annotation_path)
            if path.is_file()
        )
        if size >= _POOL_MIN_BYTES:
            with ProcessPoolExecutor(min(workers, len(samples)), mp_context=context) as pool:
                yield from pool.map(_read_pair, samples)
            return
    for sample in samples:
        yield _read_pair(sample)


def load_monuseg(
    root: Path, dataset_name: str = "monuseg", workers: int | None = None
) -> IngestedDataset:
    """Read and verify a complete MoNuSeg 2018 download.

    Everything is checked before anything is returned: layout and pairs, every TIFF
    readable and RGB(A) uint8, every XML parseable with at least one polygon, every
    polygon with at least 3 vertices and inside the image (within
    :data:`BOUNDS_TOLERANCE_PX`, clipped), no two images with identical pixels. All
    problems across all files are collected and raised together.

    Args:
        root: Folder that holds ``MoNuSeg 2018 Training Data/`` and/or
            ``MoNuSegTestData/``.
        dataset_name: Value of the manifest's ``dataset`` column.
        workers: Processes that read the files in parallel (default
            :func:`default_workers`); 1 reads them in this process, and so does a
            dataset under 16 MB of raw files or a caller that runs other threads
            (:func:`_fork_context`). The result, and the order of the problems, do not
            depend on it.

    Returns:
        The dataset: manifest (training rows first, each split sorted by id; paths
        relative to ``root``), RGB uint8 images and binary uint8 masks keyed by id.

    Raises:
        DatasetValidationError: Listing every bad file and the reason.
    """
    root = Path(root)
    samples, problems = _scan_layout(root)
    if not samples:
        raise DatasetValidationError(problems, root)
    workers = default_workers() if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")

    images: dict[str, np.ndarray] = {}
    masks: dict[str, np.ndarray] = {}
    rows: list[dict[str, object]] = []
    first_by_pixels: dict[str, Path] = {}
    for sample, found in zip(samples, _read_pairs(samples, workers), strict=True):
        if found.image_problem is not None:
            problems.append((str(sample.image_path), found.image_problem))
        problems += [(str(sample.annotation_path), reason) for reason in found.annotation_problems]
        image, mask = found.image, found.mask
        if image is not None:
            if found.pixels_sha256 in first_by_pixels:
                problems.append(
                    (
                        str(sample.image_path),
                        "duplicate image: identical pixels to "
                        f"{first_by_pixels[found.pixels_sha256]}",
                    )
                )
                continue
            first_by_pixels[found.pixels_sha256] = sample.image_path
        if image is None or mask is None or problems:
            continue  # keep verifying; nothing is returned once a problem exists

        images[sample.id] = image
        masks[sample.id] = mask
        rows.append(
            {
                "id": sample.id,
                "dataset": dataset_name,
                "split": sample.split,
                "image_path": sample.image_path.relative_to(root).as_posix(),
                "annotation_path": sample.annotation_path.relative_to(root).as_posix(),
                "height": int(image.shape[0]),
                "width": int(image.shape[1]),
                "channels": int(image.shape[2]),
                "image_sha256": found.image_sha256,
                "mask_sha256": sha256_array(mask),
                "foreground_fraction": float(mask.mean()),
            }
        )

    if problems:
        raise DatasetValidationError(problems, root)

    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    manifest = manifest.astype(
        {"height": "int64", "width": "int64", "channels": "int64", "foreground_fraction": "float64"}
    )
    counts = manifest["split"].value_counts().to_dict()
    logger.info(
        "Loaded MoNuSeg from %s: %d images (%s), mean foreground fraction %.3f",
        root,
        len(manifest),
        ", ".join(f"{k}={v}" for k, v in sorted(counts.items())),
        manifest["foreground_fraction"].mean(),
    )
    return IngestedDataset(manifest=manifest, images=images, masks=masks)
