"""Generic adapter for your own slides: a folder of images with same-stem masks.

Layout (``root`` = ``data/01_raw/<name>/``), either everything in one pool::

    <root>/images/<stem>.<ext>     ext: png, tif, tiff, jpg, jpeg, bmp
    <root>/masks/<stem>.<ext>      ext: png, tif, tiff, bmp (lossless only)

where every image is ``"train"`` (data_processing makes the K folds; there is then no
held-out test split), or with an explicit split::

    <root>/train/images/  <root>/train/masks/
    <root>/val/images/    <root>/val/masks/      (optional: a fixed validation split)
    <root>/test/images/   <root>/test/masks/

Images and masks are matched by file stem (``slide_07.tif`` <-> ``slide_07.png``).

Image conversion to RGB uint8 ``(H, W, 3)``:

- grey ``(H, W)`` -> the grey value replicated into 3 channels; RGBA / grey+alpha drop
  alpha (the usual export of slide viewers is opaque);
- 8-bit: as stored;
- 16-bit (uint16): when the image uses the upper half of the range (max >= 32768) it is
  treated as a full-range 16-bit image and divided by 257 (65535 -> 255, so intensities
  stay comparable across images); otherwise (12-bit cameras, dim fluorescence) it is
  scaled per image from its 0.5th..99.5th percentile to 0..255, the same limits for all
  channels so colour balance is kept;
- anything else (float, signed, more than 4 channels) is an error: convert it first.

Mask rule (``mask_kind``):

- ``"auto"`` (default): a mask whose values are within {0, 255} is binary (255 -> 1);
  within {0, 1} binary as is; otherwise with max <= :data:`MAX_AUTO_CLASSES` its values
  are class indices kept as they are; a larger max is an error ("mask values look like an
  image, not labels"). A dataset mixing 0/255 masks with multi-class masks is an error.
- ``"binary"``: every non-zero value -> 1.
- ``"labels"``: values kept as class indices (must fit in uint8).
- ``"instances"``: a label image with one id per object (0 = background; uint8, uint16 or
  uint32; ids need not be consecutive; at most 65,535 objects). Training uses the binary
  mask (every object -> 1); the instance map (ids renumbered 1..n, uint16) goes to
  evaluation for the object metrics (docs/metrics.md).

Masks must be single-channel (a grey RGB image is accepted), lossless (JPEG masks are
rejected: compression noise invents labels) and of their image's size. TIFFs are read
with tifffile, other formats with OpenCV (``IMREAD_UNCHANGED``, so 16-bit PNGs stay
16-bit).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from sa2_pipeline.datasets.raster import instance_labels, label_image_2d, read_raster
from sa2_pipeline.datasets.schema import (
    DatasetValidationError,
    IngestedDataset,
    Problem,
    RawSample,
)
from sa2_pipeline.datasets.verify import (
    PairRead,
    PairSpec,
    Verification,
    duplicate_ids,
    first_per_stem,
    list_files,
    pair_by_id,
    warn_unread,
)

logger = logging.getLogger(__name__)

__all__ = [
    "IMAGE_SUFFIXES",
    "MASK_SUFFIXES",
    "MAX_AUTO_CLASSES",
    "MaskKind",
    "canonical_mask",
    "load_image_folder",
    "to_rgb_uint8",
]

MaskKind = Literal["auto", "binary", "labels", "instances"]

#: Image file types read (case-insensitive).
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
#: Mask file types read; JPEG is read only to report it as lossy.
MASK_SUFFIXES = (".png", ".tif", ".tiff", ".bmp", ".jpg", ".jpeg")
#: Largest value ``mask_kind="auto"`` accepts as a class index.
MAX_AUTO_CLASSES = 20
#: Split folders of the explicit layout, in manifest order.
SPLIT_DIRS = ("train", "val", "test")
_FULL_RANGE_16BIT = 32768
_PERCENTILES = (0.5, 99.5)
_LOSSY = {".jpg", ".jpeg"}


@dataclass(frozen=True)
class _Mask:
    values: np.ndarray
    kind: Literal["binary255", "binary01", "classes", "instances"]
    instances: np.ndarray | None = None


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Convert a decoded image to RGB uint8 ``(H, W, 3)`` (rules in the module docstring).

    Raises:
        ValueError: Unsupported pixel type or channel count; the message is the reason.
    """
    if image.ndim == 3 and image.shape[-1] in (2, 4):
        image = image[..., :-1]  # drop alpha
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 3 and image.shape[-1] != 3:
        raise ValueError(
            f"expected a grey, RGB or RGBA image, got {image.shape[-1]} channels "
            f"(shape {image.shape})"
        )
    if image.dtype == np.uint16:
        if int(image.max(initial=0)) >= _FULL_RANGE_16BIT:
            image = np.rint(image.astype(np.float32) / 257.0).astype(np.uint8)
        else:
            lo, hi = np.percentile(image, _PERCENTILES)
            if hi <= lo:
                image = np.zeros(image.shape, dtype=np.uint8)
            else:
                scaled = (np.clip(image.astype(np.float32), lo, hi) - lo) * (255.0 / (hi - lo))
                image = np.rint(scaled).astype(np.uint8)
    elif image.dtype == np.bool_:
        image = image.astype(np.uint8) * 255
    elif image.dtype != np.uint8:
        raise ValueError(f"unsupported pixel type {image.dtype}; use 8- or 16-bit unsigned images")
    if image.ndim == 2:
        image = np.repeat(image[:, :, np.newaxis], 3, axis=2)
    return np.ascontiguousarray(image)


def canonical_mask(mask: np.ndarray, mask_kind: MaskKind = "auto") -> _Mask:
    """Apply the mask rule (module docstring) to a decoded single-channel mask.

    Raises:
        ValueError: The values break the rule; the message names them.
    """
    if mask.dtype == np.bool_:
        mask = mask.astype(np.uint8)
    mask = label_image_2d(mask)
    if mask_kind == "instances":
        instances = instance_labels(mask)
        return _Mask((instances > 0).astype(np.uint8), "instances", instances)
    values = np.unique(mask)
    if mask_kind == "binary":
        return _Mask((mask != 0).astype(np.uint8), "binary01")
    if values.min(initial=0) < 0:
        raise ValueError(f"negative mask values {values[values < 0][:10].tolist()}")
    if mask_kind == "labels":
        if values.max(initial=0) > 255:
            raise ValueError(f"class indices up to {int(values.max())} do not fit in uint8")
        return _Mask(mask.astype(np.uint8), "classes")
    if mask_kind != "auto":
        raise ValueError(
            f"mask_kind must be 'auto', 'binary', 'labels' or 'instances', got {mask_kind!r}"
        )
    value_set = {int(v) for v in values}
    if value_set <= {0, 1}:
        return _Mask(mask.astype(np.uint8), "binary01")
    if value_set <= {0, 255}:
        return _Mask((mask == 255).astype(np.uint8), "binary255")
    if max(value_set) <= MAX_AUTO_CLASSES:
        return _Mask(mask.astype(np.uint8), "classes")
    shown = ", ".join(str(v) for v in sorted(value_set)[:10])
    more = f" ... ({len(value_set)} distinct)" if len(value_set) > 10 else ""
    raise ValueError(
        f"mask values look like an image, not labels: {shown}{more}; expected 0/1 or 0/255 "
        f"(binary) or class indices 0..{MAX_AUTO_CLASSES}; for one id per object set "
        "data_ingestion.mask_kind: instances"
    )


def _split_groups(root: Path) -> tuple[list[tuple[str, Path]], list[Problem]]:
    """``(split, folder holding images/ and masks/)`` of the layout found, or why none."""
    pooled = [root / "images", root / "masks"]
    split_dirs = [name for name in SPLIT_DIRS if (root / name).is_dir()]
    expected = (
        f"looked for images in '{root / 'images'}' with same-stem masks in "
        f"'{root / 'masks'}', or in '{root}/<split>/images' + '{root}/<split>/masks' for "
        f"split in {', '.join(SPLIT_DIRS)}; image types {', '.join(IMAGE_SUFFIXES)}"
    )
    if not root.is_dir():
        return [], [(str(root), f"raw dataset folder does not exist; {expected}")]
    has_pool = any(p.is_dir() for p in pooled)
    if has_pool and split_dirs:
        return [], [
            (
                str(root),
                f"both 'images'/'masks' and split folders ({', '.join(split_dirs)}) found; "
                "keep one layout",
            )
        ]
    if not has_pool and not split_dirs:
        return [], [(str(root), f"no image folders found; {expected}")]
    if has_pool:
        logger.info(
            "image folder at %s: no split folders, every image is 'train' (no test split)",
            root,
        )
        return [("train", root)], []
    return [(s, root / s) for s in split_dirs], []


def _scan_group(split: str, folder: Path, used: set[Path]) -> tuple[list[RawSample], list[Problem]]:
    """The image/mask pairs of one split folder and the pairing problems."""
    image_dir, mask_dir = folder / "images", folder / "masks"
    images, problems = first_per_stem(list_files(image_dir, IMAGE_SUFFIXES), used)
    masks, more = first_per_stem(list_files(mask_dir, MASK_SUFFIXES), used)
    problems += more
    if not images:
        where = f"'{image_dir}'" + ("" if image_dir.is_dir() else " (folder missing)")
        problems.append(
            (
                str(image_dir),
                f"no images found in {where} ({split} split); expected files of type "
                f"{', '.join(IMAGE_SUFFIXES)} with same-stem masks in '{mask_dir}'",
            )
        )
    samples, more = pair_by_id(
        images,
        masks,
        split=split,
        expected=lambda stem: mask_dir / f"{stem}.png",
        missing=lambda stem, path: f"missing mask: no '{stem}.<png|tif|tiff|bmp>' in {mask_dir}",
        orphan=lambda stem: f"mask without image: no '{stem}.<ext>' in {image_dir}",
    )
    return samples, problems + more


def _scan_layout(root: Path) -> tuple[list[RawSample], list[Problem]]:
    groups, problems = _split_groups(root)
    samples: list[RawSample] = []
    used: set[Path] = set()
    for split, folder in groups:
        found, more = _scan_group(split, folder, used)
        samples += found
        problems += more
    problems += duplicate_ids((s.id, s.image_path) for s in samples)
    if groups:
        warn_unread("image folder", root,
                    [f / sub for _, f in groups for sub in ("images", "masks")], used)
    return samples, problems


def _read_pair(sample: RawSample, mask_kind: MaskKind) -> tuple[PairRead, str | None]:
    """Read one image/mask pair; the mask convention found (see :class:`_Mask`) or None."""
    found = PairRead(None, None)
    try:
        found.image = to_rgb_uint8(read_raster(sample.image_path))
    except ValueError as err:
        found.problems.append((str(sample.image_path), str(err)))
    kind = None
    if sample.annotation_path.suffix.lower() in _LOSSY:
        found.problems.append((
            str(sample.annotation_path),
            "JPEG mask: lossy compression alters label values; save masks as PNG or TIFF",
        ))
    elif sample.annotation_path.is_file():
        try:
            result = canonical_mask(read_raster(sample.annotation_path), mask_kind)
        except ValueError as err:
            found.problems.append((str(sample.annotation_path), str(err)))
        else:
            found.mask, found.instances = result.values, result.instances
            small_classes = result.kind == "classes" and int(result.values.max(initial=0)) <= 1
            kind = "binary01" if small_classes else result.kind
    return found, kind


def load_image_folder(
    root: Path, dataset_name: str = "custom", mask_kind: MaskKind = "auto"
) -> IngestedDataset:
    """Read and verify a folder of images with same-stem masks (your own slides).

    Checks, all before returning: layout and pairs, every file decodable, images
    convertible to RGB uint8, masks single-channel, lossless, of their image's size and
    following ``mask_kind``, one mask convention across the dataset, no two images with
    identical pixels. All problems are raised together.

    Args:
        root: Folder holding ``images/`` + ``masks/``, or ``train/``, ``val/``, ``test/``
            folders that each hold them.
        dataset_name: Value of the manifest's ``dataset`` column.
        mask_kind: ``"auto"``, ``"binary"``, ``"labels"`` or ``"instances"`` (module
            docstring).

    Returns:
        Manifest (split folders in train, val, test order, each sorted by id), RGB uint8
        images and uint8 masks (0 = background) keyed by id.

    Raises:
        DatasetValidationError: Listing every bad file and the reason.
    """
    root = Path(root)
    samples, problems = _scan_layout(root)
    if not samples:
        raise DatasetValidationError(problems, root)
    verification = Verification(PairSpec(root, dataset_name, "image folder"), problems)
    kinds: dict[str, list[Path]] = {
        "binary255": [], "binary01": [], "classes": [], "instances": []
    }
    for sample in samples:
        found, kind = _read_pair(sample, mask_kind)
        if kind is not None:
            kinds[kind].append(sample.annotation_path)
        verification.accept(sample, found)
    if kinds["binary255"] and kinds["classes"]:
        example_255, example_classes = kinds["binary255"][0], kinds["classes"][0]
        verification.report(
            root,
            f"mixed mask conventions: {len(kinds['binary255'])} masks are 0/255 binary "
            f"(e.g. {example_255.name}) and {len(kinds['classes'])} hold class indices "
            f"(e.g. {example_classes.name}); use one convention",
        )
    classes = sorted({int(v) for m in verification.masks.values() for v in np.unique(m)})
    return verification.finish(detail=f"mask values {classes}")
