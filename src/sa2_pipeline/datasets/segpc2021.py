"""SegPC 2021 (multiple-myeloma plasma cells) adapter: BMP images + one BMP per cell.

Layout, as the challenge archive unpacks (``root`` = the folder holding ``train/``)::

    <root>/train/x/<image>.bmp              -> split "train"
    <root>/train/y/<image>_<k>.bmp          one mask per cell instance, k = 1, 2, ...
    <root>/validation/x/<image>.bmp         -> split "test" (the protocol tests on it)
    <root>/validation/y/<image>_<k>.bmp

A ``<root>/test/`` folder (the challenge's final test images, without masks) is ignored.
A plain ``<root>/x/`` + ``<root>/y/`` pair (no split folders) is also accepted: every
image is then ``"train"`` and a warning says that there is no official test split.

Instance masks: each holds background 0 and exactly two non-zero grey levels, one for the
nucleus and one for the cytoplasm. Which level is which is read from the data, not
assumed: in every mask, the level whose region boundary touches background least (as a
fraction of its boundary pixels) is the *inner* one; across the dataset, the level that
is inner in most masks is the nucleus. All masks must use the same two levels. The
derived levels and the vote are logged. A mask with any other number of non-zero levels,
or with levels that differ from the rest of the dataset, is an error.

Canonical output: one sample per *image* (id = image stem) with a 3-class mask merged
over its instances in order of ``k``: 0 = background, 1 = cytoplasm, 2 = nucleus; where
instances overlap, the later one overwrites. Images are RGB uint8.

Not done here: the Awesome-U-Net protocol that the paper follows crops each cell around
its nucleus (scale 2.5), resizes the crop to 224 and feeds RGB + a nucleus-mask channel
(4 input channels) to predict the cytoplasm. That is a preprocessing step over these
canonical images and masks, not part of ingestion.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sa2_pipeline.datasets.raster import label_image_2d, read_raster
from sa2_pipeline.datasets.schema import (
    DatasetValidationError,
    IngestedDataset,
    Problem,
    RawSample,
    sha256_array,
)
from sa2_pipeline.datasets.verify import (
    PairSpec,
    Verification,
    duplicate_ids,
    first_per_stem,
    list_files,
    warn_unread,
)

logger = logging.getLogger(__name__)

__all__ = ["CYTOPLASM", "NUCLEUS", "SPLIT_FOLDERS", "load_segpc2021"]

#: Canonical class index of the cytoplasm.
CYTOPLASM = 1
#: Canonical class index of the nucleus.
NUCLEUS = 2
#: Split folders of the challenge archive and the split hint each becomes.
SPLIT_FOLDERS = {"train": "train", "validation": "test"}
_IGNORED_SPLIT_FOLDER = "test"  # final test images, published without masks
_SUFFIXES = {".bmp"}
_INSTANCE = re.compile(r"^(?P<image>.+)_(?P<k>\d+)$")


@dataclass
class _Image:
    id: str
    split: str
    image_path: Path
    mask_dir: Path
    mask_paths: list[Path] = field(default_factory=list)  # sorted by instance number


@dataclass(frozen=True)
class _Instance:
    """One instance mask, cropped to its bounding box (plus 1 px where the image allows)."""

    path: Path
    levels: tuple[int, int]  # the two non-zero grey levels, ascending
    inner: int | None  # the level that touches background least; None on a tie
    rows: slice
    cols: slice
    crop: np.ndarray


def _split_groups(root: Path) -> tuple[list[tuple[str, Path]], list[Problem]]:
    """``(split, folder holding x/ and y/)`` of the layout found, or why there is none."""
    expected = (
        f"looked for '<image>.bmp' in '{root / 'train' / 'x'}' and "
        f"'{root / 'validation' / 'x'}' with '<image>_<k>.bmp' cell masks in the sibling "
        f"'y' folders, or in '{root / 'x'}' + '{root / 'y'}'"
    )
    if not root.is_dir():
        return [], [(str(root), f"raw dataset folder does not exist; {expected}")]
    split_layout = [name for name in SPLIT_FOLDERS if (root / name).is_dir()]
    flat_layout = (root / "x").is_dir() or (root / "y").is_dir()
    if split_layout and flat_layout:
        return [], [
            (
                str(root),
                f"both split folders ({', '.join(split_layout)}) and a plain 'x'/'y' pair "
                "found; keep one layout",
            )
        ]
    if not split_layout and not flat_layout:
        return [], [(str(root), f"no SegPC folders found; {expected}")]
    if flat_layout:
        logger.warning(
            "SegPC at %s: plain x/y layout, every image is 'train'; there is no official "
            "test split (use train/ and validation/ folders for the protocol's split)",
            root,
        )
        return [("train", root)], []
    if (root / _IGNORED_SPLIT_FOLDER).is_dir():
        logger.warning(
            "SegPC at %s: ignoring '%s/' (the challenge's final test images have no masks)",
            root,
            _IGNORED_SPLIT_FOLDER,
        )
    return [(SPLIT_FOLDERS[name], root / name) for name in split_layout], []


def _scan_group(split: str, folder: Path, used: set[Path]) -> tuple[list[_Image], list[Problem]]:
    """The images of one split folder with their cell masks, and the pairing problems."""
    x_dir, y_dir = folder / "x", folder / "y"
    paths, problems = first_per_stem(list_files(x_dir, _SUFFIXES), used)
    images = {stem: _Image(stem, split, path, y_dir) for stem, path in paths.items()}
    if not images:
        problems.append((str(x_dir), f"no '<image>.bmp' images found ({split} split)"))
    instances: list[tuple[str, int, Path]] = []
    for stem, found in list_files(y_dir, _SUFFIXES).items():
        _, more = first_per_stem({stem: found}, used)
        problems += more
        match = _INSTANCE.match(stem)
        if match is None:
            problems.append(
                (str(found[0]), "mask name does not follow '<image>_<k>.bmp' (k = 1, 2, ...)")
            )
        elif match["image"] not in images:
            problems.append(
                (str(found[0]), f"mask without image (expected {x_dir / match['image']}.bmp)")
            )
        else:
            instances.append((match["image"], int(match["k"]), found[0]))
    for image_id, _, path in sorted(instances):
        images[image_id].mask_paths.append(path)
    problems += [
        (str(image.image_path), f"no cell masks '{y_dir / image.id}_<k>.bmp' found")
        for image in images.values()
        if not image.mask_paths
    ]
    return list(images.values()), problems


def _scan_layout(root: Path) -> tuple[list[_Image], list[Problem]]:
    groups, problems = _split_groups(root)
    found: list[_Image] = []
    used: set[Path] = set()
    for split, folder in groups:
        images, more = _scan_group(split, folder, used)
        found += images
        problems += more
    problems += duplicate_ids((image.id, image.image_path) for image in found)
    if groups:
        warn_unread("SegPC", root, [f / sub for _, f in groups for sub in ("x", "y")], used)
    return found, problems


def _boundary_contact(crop: np.ndarray, level: int) -> tuple[int, int]:
    """``(boundary pixels touching background, boundary pixels)`` of one grey level.

    A boundary pixel of ``level`` has a 4-neighbour of another value; the outside of the
    crop counts as the same level (a cell cut by the image edge is not "touching
    background" there).
    """
    region = crop == level
    padded = np.pad(crop, 1, mode="constant", constant_values=level)
    neighbours = [
        padded[:-2, 1:-1],
        padded[2:, 1:-1],
        padded[1:-1, :-2],
        padded[1:-1, 2:],
    ]
    boundary = region & np.logical_or.reduce([n != level for n in neighbours])
    touching = region & np.logical_or.reduce([n == 0 for n in neighbours])
    return int(touching.sum()), int(boundary.sum())


def _read_instance(path: Path, shape: tuple[int, int] | None) -> _Instance:
    """Read one cell mask; raises ValueError with the reason if it is not usable."""
    mask = label_image_2d(read_raster(path))
    if mask.dtype != np.uint8:
        raise ValueError(f"expected an 8-bit grey mask, got pixel type {mask.dtype}")
    if shape is not None and mask.shape != shape:
        raise ValueError(
            f"mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image is {shape[1]}x{shape[0]}"
        )
    counts = np.bincount(mask.ravel(), minlength=256)
    levels = [int(v) for v in np.flatnonzero(counts[1:]) + 1]
    if len(levels) != 2:
        raise ValueError(
            f"expected exactly 2 non-zero grey levels (nucleus and cytoplasm), found "
            f"{len(levels)}: {levels[:10]}"
        )
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    r0, r1 = max(int(rows[0]) - 1, 0), min(int(rows[-1]) + 2, mask.shape[0])
    c0, c1 = max(int(cols[0]) - 1, 0), min(int(cols[-1]) + 2, mask.shape[1])
    crop = np.ascontiguousarray(mask[r0:r1, c0:c1])
    fractions = []
    for level in levels:
        touching, boundary = _boundary_contact(crop, level)
        fractions.append(touching / boundary if boundary else 0.0)
    inner = None if fractions[0] == fractions[1] else levels[int(np.argmin(fractions))]
    return _Instance(path, (levels[0], levels[1]), inner, slice(r0, r1), slice(c0, c1), crop)


def _derive_levels(
    instances: list[_Instance], root: Path
) -> tuple[tuple[int, int] | None, list[Problem]]:
    """``(nucleus level, cytoplasm level)`` from every instance, and disagreeing masks."""
    if not instances:
        return None, []
    pairs = Counter(inst.levels for inst in instances)
    pair, n_pair = pairs.most_common(1)[0]
    problems = [
        (
            str(inst.path),
            f"grey levels {list(inst.levels)} differ from the dataset's {list(pair)} "
            f"(used by {n_pair} of {len(instances)} masks)",
        )
        for inst in instances
        if inst.levels != pair
    ]
    votes = Counter(inst.inner for inst in instances if inst.levels == pair)
    low, high = votes.get(pair[0], 0), votes.get(pair[1], 0)
    if low == high:
        problems.append(
            (
                str(root),
                f"cannot tell nucleus from cytoplasm: grey level {pair[0]} is the inner one "
                f"in {low} masks and {pair[1]} in {high}",
            )
        )
        return None, problems
    nucleus, cytoplasm = (pair[0], pair[1]) if low > high else (pair[1], pair[0])
    agree, total = max(low, high), low + high + votes.get(None, 0)
    logger.info(
        "SegPC grey levels read from the masks: nucleus = %d, cytoplasm = %d (nucleus "
        "level inside the cytoplasm in %d of %d masks)",
        nucleus,
        cytoplasm,
        agree,
        total,
    )
    if agree < total:
        logger.warning(
            "SegPC: in %d of %d masks the nucleus level (%d) touches background more than "
            "the cytoplasm level (%d) or as much; the majority decides",
            total - agree,
            total,
            nucleus,
            cytoplasm,
        )
    return (nucleus, cytoplasm), problems


def load_segpc2021(root: Path, dataset_name: str = "segpc2021") -> IngestedDataset:
    """Read and verify a SegPC 2021 download; merge each image's cells into one mask.

    Checks, all before returning: layout, every image with at least one cell mask and
    every mask with its image, every file decodable, images RGB uint8, masks 8-bit grey
    of their image's size with exactly two non-zero levels shared by the whole dataset,
    no two images with identical pixels. All problems are raised together.

    Args:
        root: Folder holding ``train/`` (and ``validation/``), or ``x/`` + ``y/``.
        dataset_name: Value of the manifest's ``dataset`` column.

    Returns:
        Manifest (one row per image; ``annotation_path`` lists its cell masks joined by
        ``";"``), RGB uint8 images and uint8 masks (0 background, 1 cytoplasm, 2
        nucleus) keyed by image id.

    Raises:
        DatasetValidationError: Listing every bad file and the reason.
    """
    root = Path(root)
    found, problems = _scan_layout(root)
    if not found:
        raise DatasetValidationError(problems, root)
    verification = Verification(PairSpec(root, dataset_name, "SegPC 2021"), problems)
    kept = [_read_image(entry, verification) for entry in found]
    all_instances = [inst for _, instances in kept for inst in instances]
    levels, level_problems = _derive_levels(all_instances, root)
    verification.problems += level_problems
    if verification.problems or levels is None:
        raise DatasetValidationError(verification.problems, root)
    for entry, (image, instances) in zip(found, kept, strict=True):
        assert image is not None  # every image was read, or there would be a problem
        verification.keep(entry.id, _sample(entry), image, _merge(image, instances, levels),
                          annotation_paths=entry.mask_paths)
    return verification.finish(detail=f"{len(all_instances)} cells")


def _sample(entry: _Image) -> RawSample:
    return RawSample(entry.id, entry.split, entry.image_path, entry.mask_paths[0])


def _read_image(
    entry: _Image, verification: Verification
) -> tuple[np.ndarray | None, list[_Instance]]:
    """An image (None when unreadable or a duplicate) and its readable cell masks; every
    problem goes to ``verification``."""
    image: np.ndarray | None = None
    try:
        image = read_raster(entry.image_path)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] not in (3, 4):
            raise ValueError(
                f"expected an RGB uint8 image (H, W, 3), got {image.dtype} of shape "
                f"{image.shape}"
            )
        image = np.ascontiguousarray(image[..., :3])
    except ValueError as err:
        verification.report(entry.image_path, str(err))
        image = None
    shape = image.shape[:2] if image is not None else None
    instances: list[_Instance] = []
    for mask_path in entry.mask_paths:
        try:
            instances.append(_read_instance(mask_path, shape))
        except ValueError as err:
            verification.report(mask_path, str(err))
    if image is not None and verification.is_duplicate(sha256_array(image), entry.image_path):
        image = None
    return image, instances


def _merge(image: np.ndarray, instances: list[_Instance], levels: tuple[int, int]) -> np.ndarray:
    """One 3-class mask from the cell masks, in order (later cells overwrite)."""
    nucleus, cytoplasm = levels
    mask = np.zeros(image.shape[:2], dtype=np.uint8)
    for inst in instances:
        window = mask[inst.rows, inst.cols]  # a view: writes go into ``mask``
        window[inst.crop == cytoplasm] = CYTOPLASM
        window[inst.crop == nucleus] = NUCLEUS
    return mask
