"""Where the files of a MoNuSeg 2018 download are, and which image goes with which XML.

Layout, exactly as the two archives unpack (``root`` holds both folders)::

    <root>/MoNuSeg 2018 Training Data/Tissue Images/<stem>.tif
    <root>/MoNuSeg 2018 Training Data/Annotations/<stem>.xml
    <root>/MoNuSegTestData/<stem>.tif
    <root>/MoNuSegTestData/<stem>.xml
"""

from __future__ import annotations

import logging
from pathlib import Path

from sa2_pipeline.datasets.schema import DatasetValidationError, Problem, RawSample
from sa2_pipeline.datasets.verify import (
    duplicate_ids,
    first_per_stem,
    list_files,
    pair_by_id,
    warn_unread,
)

logger = logging.getLogger(__name__)

__all__ = ["TEST_DIR", "TRAIN_ANNOTATION_DIR", "TRAIN_IMAGE_DIR", "scan_layout", "scan_monuseg"]

#: Training images, relative to the dataset root (folder names as published).
TRAIN_IMAGE_DIR = Path("MoNuSeg 2018 Training Data") / "Tissue Images"
#: Training annotations, relative to the dataset root.
TRAIN_ANNOTATION_DIR = Path("MoNuSeg 2018 Training Data") / "Annotations"
#: Test images and annotations (same folder), relative to the dataset root.
TEST_DIR = Path("MoNuSegTestData")

_IMAGE_SUFFIXES = {".tif", ".tiff"}
_ANNOTATION_SUFFIX = ".xml"


def _pair_folder(
    split: str, image_dir: Path, xml_dir: Path, used: set[Path]
) -> tuple[list[RawSample], list[Problem]]:
    """The samples of one split's folder(s) and their pairing problems."""
    images, problems = first_per_stem(list_files(image_dir, _IMAGE_SUFFIXES), used)
    annotations, more = first_per_stem(list_files(xml_dir, {_ANNOTATION_SUFFIX}), used)
    problems += more
    if (image_dir.is_dir() or xml_dir.is_dir()) and not images:
        problems.append((str(image_dir), f"no '*.tif' images found ({split} split)"))
    samples, more = pair_by_id(
        images,
        annotations,
        split=split,
        expected=lambda stem: xml_dir / f"{stem}{_ANNOTATION_SUFFIX}",
        missing=lambda stem, path: f"missing annotation {path}",
        orphan=lambda stem: f"annotation without image (expected {image_dir / (stem + '.tif')})",
    )
    return samples, problems + more


def scan_layout(root: Path) -> tuple[list[RawSample], list[Problem]]:
    """Pair images with annotations; report layout and pairing problems.

    Returns:
        ``(samples, problems)``: one sample per image found (its ``annotation_path`` is
        the expected path, which may be missing; that is then also a problem), and every
        layout/pairing problem.
    """
    root = Path(root)
    train_images_dir, train_xml_dir = root / TRAIN_IMAGE_DIR, root / TRAIN_ANNOTATION_DIR
    test_dir = root / TEST_DIR
    expected = (
        f"looked for training tiles '*.tif' in '{train_images_dir}' with same-stem '*.xml' "
        f"in '{train_xml_dir}', and test '*.tif' + '*.xml' pairs in '{test_dir}'"
    )
    if not root.is_dir():
        return [], [(str(root), f"raw dataset folder does not exist; {expected}")]
    train_present = train_images_dir.is_dir() or train_xml_dir.is_dir()
    if not train_present and not test_dir.is_dir():
        return [], [(str(root), f"no MoNuSeg folders found; {expected}")]

    samples: list[RawSample] = []
    problems: list[Problem] = []
    used: set[Path] = set()
    for split, image_dir, xml_dir in (
        ("train", train_images_dir, train_xml_dir),
        ("test", test_dir, test_dir),
    ):
        found, more = _pair_folder(split, image_dir, xml_dir, used)
        samples += found
        problems += more
    if not train_present:
        logger.warning(
            "MoNuSeg at %s: no training folder '%s'; test split only", root, TRAIN_IMAGE_DIR
        )
    if not test_dir.is_dir():
        logger.warning("MoNuSeg at %s: no test folder '%s'; training split only", root, TEST_DIR)
    warn_unread("MoNuSeg", root, (train_images_dir, train_xml_dir, test_dir), used)
    problems += duplicate_ids((s.id, s.image_path) for s in samples)
    return samples, problems


def scan_monuseg(root: Path) -> list[RawSample]:
    """Find the image/annotation pairs of a MoNuSeg 2018 download.

    Only the layout is checked here (folders, pairs, ids); file contents are verified by
    :func:`~sa2_pipeline.datasets.monuseg.load_monuseg`.

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
    samples, problems = scan_layout(Path(root))
    if problems:
        raise DatasetValidationError(problems, root)
    return samples
