"""ISIC 2018 task 1 (lesion boundary segmentation) adapter: JPEG images + PNG masks.

Layout, as the two training archives unpack (``root`` holds both folders)::

    <root>/ISIC2018_Task1-2_Training_Input/ISIC_<7 digits>.jpg             (2594)
    <root>/ISIC2018_Task1_Training_GroundTruth/ISIC_<7 digits>_segmentation.png

The archives' ``LICENSE.txt`` / ``ATTRIBUTION.txt`` are ignored. Masks are 8-bit with 0 =
background and 255 = lesion; the canonical mask is ``{0, 1}``, any other value is an
error. Images are RGB uint8 JPEGs of varying size (up to about 6000x4000), kept at native
resolution unless ``max_side`` asks for a cap (resizing for the model is data_processing's
job).

Official split (the protocol the paper follows): the training set sorted by id, the first
1815 images ``"train"``, the next 259 ``"val"``, the last 520 ``"test"``. A folder with a
different number of images (a subset, a test fixture) gets the same proportions
(1815/2594, 259/2594, the rest; at least one validation and one test image when there
are three or more), and a warning says so.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from sa2_pipeline.datasets.raster import label_image_2d, read_raster
from sa2_pipeline.datasets.schema import (
    DatasetValidationError,
    IngestedDataset,
    Problem,
    RawSample,
    proportional_counts,
)
from sa2_pipeline.datasets.verify import (
    PairReader,
    PairSpec,
    Verification,
    first_per_stem,
    list_files,
    pair_by_id,
    verify_pairs,
    warn_unread,
)

logger = logging.getLogger(__name__)

__all__ = [
    "GROUND_TRUTH_DIR",
    "IMAGE_DIR",
    "OFFICIAL_SPLIT_COUNTS",
    "isic_split_counts",
    "load_isic2018",
    "scan_isic2018",
]

#: Training images, relative to the dataset root (folder names as published).
IMAGE_DIR = Path("ISIC2018_Task1-2_Training_Input")
#: Training masks, relative to the dataset root.
GROUND_TRUTH_DIR = Path("ISIC2018_Task1_Training_GroundTruth")
#: ``(train, val, test)`` image counts of the official index split of the 2594 images.
OFFICIAL_SPLIT_COUNTS = (1815, 259, 520)
_MASK_SUFFIX = "_segmentation"
_IMAGE_SUFFIXES = {".jpg", ".jpeg"}
_ID = re.compile(r"^ISIC_\d+$")


def isic_split_counts(n: int) -> tuple[int, int, int]:
    """``(train, val, test)`` counts of the official split for ``n`` sorted images.

    Exactly :data:`OFFICIAL_SPLIT_COUNTS` for the full 2594 images; otherwise the same
    proportions (:func:`~sa2_pipeline.datasets.schema.proportional_counts`).
    """
    total = sum(OFFICIAL_SPLIT_COUNTS)
    if n == total:
        return OFFICIAL_SPLIT_COUNTS
    train, val, test = proportional_counts(n, tuple(c / total for c in OFFICIAL_SPLIT_COUNTS))
    return train, val, test


def _dataset_files(folder: Path, suffixes: set[str], strip: str) -> dict[str, list[Path]]:
    """``id -> files`` of the dataset's files in ``folder`` (others are left unread)."""
    return {
        stem.removesuffix(strip): paths
        for stem, paths in list_files(folder, suffixes).items()
        if stem.endswith(strip) and _ID.match(stem.removesuffix(strip))
    }


def _splits(root: Path, ids: list[str]) -> dict[str, str]:
    """The official index split of the sorted ``ids`` (warning when it is scaled)."""
    n_train, n_val, _ = isic_split_counts(len(ids))
    if ids and len(ids) != sum(OFFICIAL_SPLIT_COUNTS):
        logger.warning(
            "ISIC 2018 at %s: %d images instead of the published %d; the official index "
            "split 1815/259/520 is applied in proportion: %d train, %d val, %d test",
            root,
            len(ids),
            sum(OFFICIAL_SPLIT_COUNTS),
            n_train,
            n_val,
            len(ids) - n_train - n_val,
        )
    return {
        sample_id: "train" if index < n_train else "val" if index < n_train + n_val else "test"
        for index, sample_id in enumerate(ids)
    }


def _scan_layout(root: Path) -> tuple[list[RawSample], list[Problem]]:
    image_dir, mask_dir = root / IMAGE_DIR, root / GROUND_TRUTH_DIR
    expected = (
        f"looked for 'ISIC_<id>.jpg' images in '{image_dir}' and "
        f"'ISIC_<id>{_MASK_SUFFIX}.png' masks in '{mask_dir}'"
    )
    if not root.is_dir():
        return [], [(str(root), f"raw dataset folder does not exist; {expected}")]
    if not image_dir.is_dir() and not mask_dir.is_dir():
        return [], [(str(root), f"no ISIC 2018 folders found; {expected}")]

    used: set[Path] = set()
    images, problems = first_per_stem(_dataset_files(image_dir, _IMAGE_SUFFIXES, ""), used)
    masks, more = first_per_stem(_dataset_files(mask_dir, {".png"}, _MASK_SUFFIX), used)
    problems += more
    if not images:
        problems.append((str(image_dir), f"no 'ISIC_<id>.jpg' images found; {expected}"))
    ids = sorted(images)
    samples, more = pair_by_id(
        {sample_id: images[sample_id] for sample_id in ids},
        masks,
        split=_splits(root, ids),
        expected=lambda sample_id: mask_dir / f"{sample_id}{_MASK_SUFFIX}.png",
        missing=lambda sample_id, path: f"missing mask {path}",
        orphan=lambda sample_id: f"mask without image (expected {image_dir / sample_id}.jpg)",
    )
    warn_unread("ISIC 2018", root, (image_dir, mask_dir), used,
                skip=lambda path: path.suffix.lower() == ".txt")  # LICENSE, ATTRIBUTION
    return samples, problems + more


def scan_isic2018(root: Path) -> list[RawSample]:
    """Find the image/mask pairs of an ISIC 2018 task 1 training download (no decoding).

    Args:
        root: Folder holding ``ISIC2018_Task1-2_Training_Input/`` and
            ``ISIC2018_Task1_Training_GroundTruth/``.

    Returns:
        One :class:`RawSample` per image, sorted by id, with its official split.

    Raises:
        DatasetValidationError: Missing folders, an image without mask or the reverse,
            or colliding ids. Every problem is listed.
    """
    samples, problems = _scan_layout(Path(root))
    if problems:
        raise DatasetValidationError(problems, root)
    return samples


def _rgb_image(path: Path) -> np.ndarray:
    image = read_raster(path)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(
            f"expected an RGB uint8 image (H, W, 3), got {image.dtype} of shape {image.shape}"
        )
    return image


def _binary_mask(path: Path) -> np.ndarray:
    mask = label_image_2d(read_raster(path))
    values = np.unique(mask)
    bad = values[(values != 0) & (values != 255)]
    if bad.size:
        shown = ", ".join(str(int(v)) for v in bad[:10]) + (" ..." if bad.size > 10 else "")
        raise ValueError(
            f"unexpected mask values {shown} ({mask.dtype}); expected 0 (background) and "
            "255 (lesion)"
        )
    return (mask == 255).astype(np.uint8)


def load_isic2018(root: Path, dataset_name: str = "isic2018",
                  max_side: int | None = None) -> IngestedDataset:
    """Read and verify the ISIC 2018 task 1 training set with its official split.

    Checks, all before returning: layout and pairs, every JPEG decodable as RGB uint8,
    every mask a single-channel 0/255 image of its image's size, no two images with
    identical pixels. All problems are collected and raised together.

    Args:
        root: Folder holding ``ISIC2018_Task1-2_Training_Input/`` and
            ``ISIC2018_Task1_Training_GroundTruth/``.
        dataset_name: Value of the manifest's ``dataset`` column.
        max_side: Keep each image (and mask) downscaled to this longer side at most, as it
            is read; ``None`` keeps native resolution (the full set then needs tens of GB).

    Returns:
        Manifest (sorted by id; split train / val / test by the official index split),
        RGB uint8 images and binary uint8 masks keyed by id.

    Raises:
        DatasetValidationError: Listing every bad file and the reason.
    """
    root = Path(root)
    samples, problems = _scan_layout(root)
    if not samples:
        raise DatasetValidationError(problems, root)

    spec = PairSpec(root, dataset_name, "ISIC 2018", max_side=max_side)
    verification = verify_pairs(samples, PairReader(_rgb_image, _binary_mask),
                                Verification(spec, problems))
    return verification.finish()
