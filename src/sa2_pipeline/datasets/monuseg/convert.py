"""MoNuSeg 2018 converter: one TIFF tile + its Aperio XML -> RGB image, binary mask and
instance map (one id per polygon).

Image policy: RGB uint8 tiles are taken as they are; RGBA drops the alpha channel
(ImageScope exports carry an opaque alpha); grayscale or non-uint8 tiles are rejected,
since an H&E dataset with such a tile holds the wrong file and guessing a conversion would
hide that. The rest (layout, pairing, duplicates, the final error) is the shared
workflow of :mod:`sa2_pipeline.datasets.verify`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sa2_pipeline.datasets.monuseg.aperio import AnnotationError, parse_aperio
from sa2_pipeline.datasets.monuseg.layout import scan_layout
from sa2_pipeline.datasets.monuseg.rasterise import (
    check_regions,
    polygons_to_instances,
    polygons_to_mask,
)
from sa2_pipeline.datasets.raster import instance_labels, read_tiff, rgb_uint8
from sa2_pipeline.datasets.schema import (
    DatasetValidationError,
    IngestedDataset,
    RawSample,
    sha256_array,
    sha256_file,
)
from sa2_pipeline.datasets.verify import (
    PairRead,
    PairSpec,
    Verification,
    default_workers,
    verify_pairs,
)

__all__ = ["default_workers", "load_monuseg", "read_tile"]

#: Below this many bytes of raw files, starting worker processes costs more than it saves.
_POOL_MIN_BYTES = 16_000_000


def read_tile(path: Path) -> np.ndarray:
    """Read a TIFF tile as RGB uint8 ``(H, W, 3)``.

    Raises:
        ValueError: Unreadable, or not an RGB/RGBA uint8 image; the message is the reason.
    """
    image, axes = read_tiff(path)
    if image.ndim == 3 and axes.endswith("SYX") and image.shape[0] in (3, 4):
        image = np.moveaxis(image, 0, -1)  # planar configuration -> interleaved
    if image.ndim == 4 and image.shape[0] == 1:
        image = image[0]
    rgb = rgb_uint8(image, f" (axes {axes!r}); grayscale tiles are not accepted for H&E")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"empty image of shape {image.shape}")
    return rgb


def _read_pair(sample: RawSample) -> PairRead:
    """Read, verify and rasterise one pair; every problem is returned, none raised.

    Runs in a worker process when the dataset is read in a pool, so it also hashes the
    pixels and the file there.
    """
    found = PairRead(None, None)
    try:
        found.image = read_tile(sample.image_path)
    except ValueError as err:
        found.problems.append((str(sample.image_path), str(err)))
    image = found.image
    if sample.annotation_path.is_file():
        try:
            regions = parse_aperio(sample.annotation_path)
        except AnnotationError as err:
            found.problems.append((str(sample.annotation_path), str(err)))
        else:
            height, width = image.shape[:2] if image is not None else (None, None)
            polygons, reasons = check_regions(regions, height, width)
            found.problems += [(str(sample.annotation_path), reason) for reason in reasons]
            if image is not None and not reasons:
                height, width = image.shape[:2]
                found.mask = polygons_to_mask(polygons, height, width)
                try:
                    found.instances = instance_labels(
                        polygons_to_instances(polygons, height, width))
                except ValueError as err:
                    found.problems.append((str(sample.annotation_path), str(err)))
    if image is not None:
        found.pixels_sha256 = sha256_array(image)
        found.image_sha256 = sha256_file(sample.image_path)
    return found


def load_monuseg(
    root: Path, dataset_name: str = "monuseg", workers: int | None = None
) -> IngestedDataset:
    """Read and verify a complete MoNuSeg 2018 download.

    Everything is checked before anything is returned: layout and pairs, every TIFF
    readable and RGB(A) uint8, every XML parseable with at least one polygon, every
    polygon with at least 3 vertices and inside the image (within
    :data:`~sa2_pipeline.datasets.monuseg.rasterise.BOUNDS_TOLERANCE_PX`, clipped), no
    two images with identical pixels. All problems across all files are collected and
    raised together.

    Args:
        root: Folder that holds ``MoNuSeg 2018 Training Data/`` and/or
            ``MoNuSegTestData/``.
        dataset_name: Value of the manifest's ``dataset`` column.
        workers: Processes that read the files in parallel (default
            :func:`~sa2_pipeline.datasets.verify.default_workers`); 1 reads them in this
            process, and so does a dataset under 16 MB of raw files or a caller that runs
            other threads. The result, and the order of the problems, do not depend on it.

    Returns:
        The dataset: manifest (training rows first, each split sorted by id; paths
        relative to ``root``), RGB uint8 images and binary uint8 masks keyed by id.

    Raises:
        DatasetValidationError: Listing every bad file and the reason.
    """
    root = Path(root)
    samples, problems = scan_layout(root)
    if not samples:
        raise DatasetValidationError(problems, root)
    workers = default_workers() if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    verification = Verification(PairSpec(root, dataset_name, "MoNuSeg"), problems)
    verify_pairs(samples, _read_pair, verification, workers, _POOL_MIN_BYTES)
    return verification.finish()
