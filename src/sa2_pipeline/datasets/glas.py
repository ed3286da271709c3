"""GlaS (Warwick-QU gland segmentation, MICCAI 2015) adapter: BMP images + instance masks.

Layout, as the archive unpacks: one folder (``root`` itself, or the single sub-folder of
``root`` that holds the files, e.g. ``Warwick QU Dataset (Released 2016_07_08)/``)::

    train_<N>.bmp   train_<N>_anno.bmp     N = 1..85  -> split "train"
    testA_<N>.bmp   testA_<N>_anno.bmp     N = 1..60  -> split "test"
    testB_<N>.bmp   testB_<N>_anno.bmp     N = 1..20  -> split "test"
    Grade.csv

Ids are the image stems (``train_1``, ``testA_12``), so test part A/B stays visible.
Annotations are instance label images (0 = background, one integer per gland); the
canonical mask is binary: 1 wherever the label is not 0. An annotation decoded as colour
(a palette BMP with non-grey entries) is accepted when it has at most 256 distinct colours
(what a palette can hold), foreground being every non-black pixel; more colours means the
file is a picture, not a label map, and is an error. The glands' ids are kept as the
instance map (renumbered 1..n; one id per colour for palette files) for the object
metrics of evaluation.

Image policy (as for MoNuSeg): RGB uint8 images as they are, RGBA drops alpha, anything
else (grey, 16-bit) is rejected. Image sizes vary (most 775x522); each annotation must
match its image. ``Grade.csv`` is not needed to build masks: a missing one, or images it
does not list, are warnings.
"""

from __future__ import annotations

import csv
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sa2_pipeline.datasets.raster import instance_labels, read_raster, rgb_uint8
from sa2_pipeline.datasets.schema import (
    DatasetValidationError,
    IngestedDataset,
    Problem,
    RawSample,
)
from sa2_pipeline.datasets.verify import (
    PairReader,
    PairSpec,
    Verification,
    list_files,
    verify_pairs,
    warn_unread,
)

logger = logging.getLogger(__name__)

__all__ = ["GRADE_FILE", "load_glas", "scan_glas"]

#: Grade table shipped with the dataset (not needed to build masks).
GRADE_FILE = "Grade.csv"
#: Published counts per part, used only to warn about incomplete downloads.
_PUBLISHED_COUNTS = {"train": 85, "testA": 60, "testB": 20}
_PARTS = ("train", "testA", "testB")
_NAME = re.compile(r"^(?P<part>train|testA|testB)_(?P<n>\d+)(?P<anno>_anno)?$")
_SUFFIXES = {".bmp"}
_MAX_PALETTE_COLOURS = 256


@dataclass(frozen=True)
class _Found:
    data_dir: Path | None
    samples: list[RawSample]
    problems: list[Problem]


def _has_glas_files(folder: Path) -> bool:
    return any(_NAME.match(stem) for stem in list_files(folder, _SUFFIXES))


def _find_data_dir(root: Path) -> tuple[Path | None, list[Problem]]:
    """The folder holding the GlaS files: ``root`` or its single sub-folder that does."""
    expected = (
        f"looked for 'train_<N>.bmp', 'testA_<N>.bmp', 'testB_<N>.bmp' with same-name "
        f"'*_anno.bmp' masks in '{root}' and its immediate sub-folders"
    )
    if not root.is_dir():
        return None, [(str(root), f"raw dataset folder does not exist; {expected}")]
    if _has_glas_files(root):
        return root, []
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    holding = [d for d in subdirs if _has_glas_files(d)]
    if len(holding) == 1:
        return holding[0], []
    if not holding:
        return None, [(str(root), f"no GlaS images found; {expected}")]
    names = ", ".join(f"'{d.name}'" for d in holding)
    return None, [(str(root), f"GlaS files found in several sub-folders ({names}); keep one")]


def _scan_layout(root: Path) -> _Found:
    data_dir, problems = _find_data_dir(root)
    if data_dir is None:
        return _Found(None, [], problems)

    images: dict[tuple[str, int], Path] = {}
    annotations: dict[tuple[str, int], Path] = {}
    used: set[Path] = set()
    for stem, paths in list_files(data_dir, _SUFFIXES).items():
        match = _NAME.match(stem)
        if match is None:
            continue
        used.update(paths)
        problems += [(str(p), f"same stem as {paths[0]}; ids must be unique") for p in paths[1:]]
        key = (match["part"], int(match["n"]))
        (annotations if match["anno"] else images)[key] = paths[0]

    samples: list[RawSample] = []
    for key in sorted(images, key=lambda k: (_PARTS.index(k[0]), k[1])):
        part, n = key
        image_path = images[key]
        anno_path = annotations.get(key, data_dir / f"{part}_{n}_anno{image_path.suffix}")
        if key not in annotations:
            problems.append((str(image_path), f"missing annotation {anno_path}"))
        split = "train" if part == "train" else "test"
        samples.append(RawSample(image_path.stem, split, image_path, anno_path))
    for key, anno_path in sorted(annotations.items()):
        if key not in images:
            expected = data_dir / f"{key[0]}_{key[1]}.bmp"
            problems.append((str(anno_path), f"annotation without image (expected {expected})"))

    counts = {part: sum(1 for k in images if k[0] == part) for part in _PARTS}
    if counts != _PUBLISHED_COUNTS:
        logger.warning(
            "GlaS at %s: found %s images, the published dataset has %s",
            data_dir,
            counts,
            _PUBLISHED_COUNTS,
        )
    warn_unread("GlaS", root, [data_dir], used, skip=lambda path: path.name == GRADE_FILE)
    return _Found(data_dir, samples, problems)


def scan_glas(root: Path) -> list[RawSample]:
    """Find the image/annotation pairs of a GlaS download (layout only, no decoding).

    Args:
        root: The GlaS folder, or a folder whose single sub-folder holds the files.

    Returns:
        One :class:`RawSample` per image: train, then testA, then testB, each by number.

    Raises:
        DatasetValidationError: No GlaS files, an image without annotation or the
            reverse, or colliding ids. Every problem is listed.
    """
    found = _scan_layout(Path(root))
    if found.problems:
        raise DatasetValidationError(found.problems, root)
    return found.samples


def _check_grades(data_dir: Path, samples: list[RawSample]) -> None:
    """Warn when ``Grade.csv`` is missing, unreadable, or does not list every image."""
    grade_path = data_dir / GRADE_FILE
    if not grade_path.is_file():
        logger.warning(
            "GlaS at %s: no %s (gland grades); masks do not need it", data_dir, GRADE_FILE
        )
        return
    try:
        with open(grade_path, newline="", encoding="utf-8-sig") as handle:
            names = {row[0].strip() for row in csv.reader(handle) if row}
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        logger.warning("GlaS: cannot read %s: %s", grade_path, err)
        return
    unlisted = [s.id for s in samples if s.id not in names]
    if unlisted:
        logger.warning(
            "GlaS: %d image(s) not listed in %s: %s",
            len(unlisted),
            grade_path,
            ", ".join(unlisted[:10]) + (" ..." if len(unlisted) > 10 else ""),
        )


def _rgb_image(path: Path) -> np.ndarray:
    """RGB uint8 ``(H, W, 3)``; raises ValueError with the reason otherwise."""
    return rgb_uint8(read_raster(path), "; grey images are not accepted for H&E")


def _read_annotation(path: Path) -> np.ndarray:
    return _binary_from_instances(read_raster(path))


def _binary_from_instances(annotation: np.ndarray) -> np.ndarray:
    """Instance labels (grey, or palette colours) -> binary uint8 ``(H, W)``."""
    if not np.issubdtype(annotation.dtype, np.integer):
        raise ValueError(f"expected an integer label image, got pixel type {annotation.dtype}")
    if annotation.ndim == 2:
        return (annotation > 0).astype(np.uint8)
    rgb = annotation[..., :3]
    if (rgb == rgb[..., :1]).all():
        return (rgb[..., 0] > 0).astype(np.uint8)
    n_colours = len(np.unique(rgb.reshape(-1, 3), axis=0))
    if n_colours > _MAX_PALETTE_COLOURS:
        raise ValueError(
            f"annotation is a colour image with {n_colours} distinct colours: it looks like "
            "a picture, not an instance label map (0 = background, one value per gland)"
        )
    return rgb.any(axis=-1).astype(np.uint8)


def _read_instances(path: Path) -> np.ndarray:
    """The annotation as a canonical instance map (grey ids, or one id per colour)."""
    annotation = read_raster(path)
    if annotation.ndim == 3 and not (annotation[..., :3] == annotation[..., :1]).all():
        _binary_from_instances(annotation)  # the colour-count check and its message
        rgb = annotation[..., :3].reshape(-1, 3)
        colours, ids = np.unique(rgb, axis=0, return_inverse=True)
        black = np.flatnonzero((colours == 0).all(axis=1))
        ids = ids.reshape(annotation.shape[:2]) + 1
        if black.size:
            ids[ids == black[0] + 1] = 0
        annotation = ids
    return instance_labels(annotation)


def load_glas(root: Path, dataset_name: str = "glas",
              max_side: int | None = None) -> IngestedDataset:
    """Read and verify a complete GlaS download.

    Checks, all before returning: layout and pairs, every image decodable and RGB(A)
    uint8, every annotation decodable as a label map of its image's size, no two images
    with identical pixels. All problems are collected and raised together.

    Args:
        root: The GlaS folder, or a folder whose single sub-folder holds the files.
        dataset_name: Value of the manifest's ``dataset`` column.

    Returns:
        Manifest (train rows first; paths relative to ``root``), RGB uint8 images and
        binary uint8 masks keyed by id.

    Raises:
        DatasetValidationError: Listing every bad file and the reason.
    """
    root = Path(root)
    found = _scan_layout(root)
    problems = list(found.problems)
    if not found.samples:
        raise DatasetValidationError(problems or [(str(root), "no GlaS images found")], root)
    data_dir = found.data_dir or root  # samples imply a data folder
    _check_grades(data_dir, found.samples)

    spec = PairSpec(root, dataset_name, "GlaS", mask_word="annotation", max_side=max_side,
                    report_root=data_dir)
    reader = PairReader(_rgb_image, _read_annotation, _read_instances)
    verification = verify_pairs(found.samples, reader, Verification(spec, problems))
    return verification.finish()
