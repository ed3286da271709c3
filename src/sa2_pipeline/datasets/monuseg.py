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

import logging
import xml.etree.ElementTree as ET
from collections import defaultdict
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
    sha256_array,
    sha256_file,
)

logger = logging.getLogger(__name__)

__all__ = [
    "BOUNDS_TOLERANCE_PX",
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
    folders = {train_images_dir, train_xml_dir, test_dir}
    ignored = sorted(
        path
        for folder in folders
        if folder.is_dir()
        for path in folder.iterdir()
        if path.is_file() and path not in used
    )
    if not train_present:
        logger.warning(
            "MoNuSeg at %s: no training folder '%s'; test split only", root, TRAIN_IMAGE_DIR
        )
    if not test_present:
        logger.warning("MoNuSeg at %s: no test folder '%s'; training split only", root, TEST_DIR)
    if ignored:
        logger.warning(
            "MoNuSeg at %s: ignored %d file(s) that are not image/annotation files: %s",
            root,
            len(ignored),
            ", ".join(str(p.relative_to(root)) for p in ignored[:10])
            + (" ..." if len(ignored) > 10 else ""),
        )

    by_id: dict[str, list[RawSample]] = defaultdict(list)
    for sample in samples:
        by_id[sample.id].append(sample)
    for sample_id, same in by_id.items():
        for other in same[1:]:
            problems.append(
                (str(other.image_path), f"duplicate id {sample_id!r} (also {same[0].image_path})")
            )
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

    Raises:
        _AnnotationError: Not parseable, wrong root element, or a non-numeric vertex.
    """
    try:
        tree = ET.parse(xml_path)
    except ET.ParseError as err:
        raise _AnnotationError(f"malformed XML: {err}") from err
    except OSError as err:
        raise _AnnotationError(f"unreadable annotation file: {err}") from err
    xml_root = tree.getroot()
    if xml_root.tag != "Annotations":
        raise _AnnotationError(
            f"not an Aperio ImageScope annotation: root element <{xml_root.tag}>, "
            "expected <Annotations>"
        )
    regions: list[_Region] = []
    for index, region in enumerate(xml_root.iterfind("./Annotation/Regions/Region")):
        region_id = region.get("Id")
        label = f"region #{index}" + (f" (Id={region_id})" if region_id is not None else "")
        coords: list[tuple[float, float]] = []
        for k, vertex in enumerate(region.iterfind("./Vertices/Vertex")):
            try:
                x, y = float(vertex.attrib["X"]), float(vertex.attrib["Y"])
            except (KeyError, ValueError) as err:
                raise _AnnotationError(
                    f"{label}: vertex {k} has no numeric X/Y attributes ({vertex.attrib})"
                ) from err
            coords.append((x, y))
        vertices = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
        if not np.isfinite(vertices).all():
            raise _AnnotationError(f"{label}: non-finite vertex coordinates")
        regions.append(_Region(label, vertices))
    return regions


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
        ``(polygons, reasons)``: clipped polygons, and one reason per bad region.
    """
    if not regions:
        return [], ["no nucleus polygons (no Annotation/Regions/Region elements)"]
    polygons: list[np.ndarray] = []
    reasons: list[str] = []
    for region in regions:
        vertices = region.vertices
        if len(vertices) < 3:
            reasons.append(
                f"{region.label}: polygon has {len(vertices)} vertices, needs at least 3"
            )
            continue
        if height is not None and width is not None:
            tol = BOUNDS_TOLERANCE_PX
            x, y = vertices[:, 0], vertices[:, 1]
            outside = (x < -tol) | (x > width + tol) | (y < -tol) | (y > height + tol)
            if outside.any():
                k = int(np.flatnonzero(outside)[0])
                reasons.append(
                    f"{region.label}: {int(outside.sum())} of {len(vertices)} vertices outside the "
                    f"{width}x{height} "
                    f"image by more than {tol:g} px, first vertex {k} at "
                    f"(x={vertices[k, 0]:.2f}, y={vertices[k, 1]:.2f})"
                )
                continue
            vertices = np.column_stack([np.clip(x, 0.0, width), np.clip(y, 0.0, height)])
        polygons.append(vertices)
    return polygons, reasons


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

    Same pixel rule as :func:`polygons_to_instances`.

    Args:
        polygons: ``(K, 2)`` arrays of ``(x, y)`` vertices; parts outside the image are cut.
        height: Output height.
        width: Output width.

    Returns:
        uint8 ``(height, width)``: 1 inside any polygon, 0 elsewhere.
    """
    mask = np.zeros((height, width), dtype=np.uint8)
    for vertices in polygons:
        rows, cols = draw_polygon(vertices[:, 1], vertices[:, 0], shape=(height, width))
        mask[rows, cols] = 1
    return mask


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


def load_monuseg(root: Path, dataset_name: str = "monuseg") -> IngestedDataset:
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

    images: dict[str, np.ndarray] = {}
    masks: dict[str, np.ndarray] = {}
    rows: list[dict[str, object]] = []
    first_by_pixels: dict[str, Path] = {}
    for sample in samples:
        image: np.ndarray | None = None
        try:
            image = _read_rgb_tiff(sample.image_path)
        except ValueError as err:
            problems.append((str(sample.image_path), str(err)))
        height, width = (image.shape[0], image.shape[1]) if image is not None else (None, None)

        polygons: list[np.ndarray] = []
        annotation_ok = False
        if sample.annotation_path.is_file():
            try:
                regions = _parse_aperio(sample.annotation_path)
            except _AnnotationError as err:
                problems.append((str(sample.annotation_path), str(err)))
            else:
                polygons, reasons = _check_regions(regions, height, width)
                problems += [(str(sample.annotation_path), reason) for reason in reasons]
                annotation_ok = not reasons

        if image is not None:
            pixels_hash = sha256_array(image)
            if pixels_hash in first_by_pixels:
                problems.append(
                    (
                        str(sample.image_path),
                        f"duplicate image: identical pixels to {first_by_pixels[pixels_hash]}",
                    )
                )
                continue
            first_by_pixels[pixels_hash] = sample.image_path
        if image is None or not annotation_ok or problems:
            continue  # keep verifying; nothing is returned once a problem exists

        mask = polygons_to_mask(polygons, image.shape[0], image.shape[1])
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
                "image_sha256": sha256_file(sample.image_path),
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
