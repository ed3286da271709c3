"""Types shared by every raw-dataset adapter.

An adapter reads one dataset in its original downloaded format, verifies all of it, and
returns an :class:`IngestedDataset`: a manifest (one row per image, columns
:data:`MANIFEST_COLUMNS`) plus every image and mask in canonical form. If anything is
wrong it raises one :class:`DatasetValidationError` that lists every bad file and why.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

__all__ = [
    "MANIFEST_COLUMNS",
    "MANIFEST_DEFAULTS",
    "SPLITS",
    "DatasetValidationError",
    "DuplicateFinder",
    "IngestedDataset",
    "Problem",
    "RawSample",
    "build_manifest",
    "label_image_2d",
    "list_files",
    "manifest_row",
    "proportional_counts",
    "read_raster",
    "sha256_array",
    "sha256_file",
    "duplicate_ids",
    "warn_unread",
]

#: ``(path, reason)``: one entry of a :class:`DatasetValidationError`.
Problem = tuple[str, str]

#: Columns of the ingestion manifest, in order.
#:
#: - ``id``: unique image id within the dataset (for MoNuSeg the file stem).
#: - ``dataset``: dataset name, e.g. ``"monuseg"``.
#: - ``split``: official split hint: ``"train"``, ``"test"``, or ``"val"`` where the
#:   dataset defines a fixed validation split (ISIC 2018's index split, ACDC's patients).
#: - ``image_path``, ``annotation_path``: raw files, POSIX paths relative to the raw
#:   dataset root (so the manifest does not change when the checkout moves). When one
#:   image's annotation is spread over several files (SegPC: one file per cell) they are
#:   joined by ``";"``. Several rows share a file when one file holds several images
#:   (ACDC: one row per slice of a volume).
#: - ``height``, ``width``, ``channels``: shape of the canonical image (channels is 3).
#: - ``image_sha256``: SHA-256 of the raw image *file* (matches ``sha256sum``).
#: - ``mask_sha256``: :func:`sha256_array` of the canonical mask.
#: - ``foreground_fraction``: fraction of mask pixels that are not background.
#: - ``group``: optional; rows with the same non-empty group must never be separated by
#:   a split (ACDC: the patient id). ``""`` for datasets without groups.
MANIFEST_COLUMNS: list[str] = [
    "id",
    "dataset",
    "split",
    "image_path",
    "annotation_path",
    "height",
    "width",
    "channels",
    "image_sha256",
    "mask_sha256",
    "foreground_fraction",
    "group",
]

#: Values of optional columns for adapters that do not set them.
MANIFEST_DEFAULTS: dict[str, str] = {"group": ""}

_INT_COLUMNS = ("height", "width", "channels")
_FLOAT_COLUMNS = ("foreground_fraction",)

#: Official split hints an adapter may give.
SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class RawSample:
    """One image and its annotation file as found on disk.

    Attributes:
        id: Unique id within the dataset.
        split: Official split hint, one of :data:`SPLITS`.
        image_path: Raw image file.
        annotation_path: Raw annotation file (the expected path; it may be missing when
            the sample comes from a scan that reports missing annotations as problems).
    """

    id: str
    split: str
    image_path: Path
    annotation_path: Path

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"RawSample {self.id!r}: split {self.split!r} is not one of {SPLITS}")


class DatasetValidationError(ValueError):
    """A raw dataset failed verification; lists every problem found, not just the first.

    The message has a header (``"3 problems in raw dataset at <root>:"``) and one line
    per problem, ``"<path>: <reason>"``.

    Attributes:
        problems: ``(path, reason)`` pairs, in the order they were found.
        root: The raw dataset root, if known.
    """

    def __init__(
        self,
        problems: list[tuple[str, str]],
        root: str | os.PathLike[str] | None = None,
    ) -> None:
        self.problems: list[tuple[str, str]] = [(str(p), str(r)) for p, r in problems]
        self.root: Path | None = Path(root) if root is not None else None
        super().__init__(self._format())

    def _format(self) -> str:
        n = len(self.problems)
        noun = "problem" if n == 1 else "problems"
        where = f" at {self.root}" if self.root is not None else ""
        lines = [f"{n} {noun} in raw dataset{where}:"]
        lines += [f"  {path}: {reason}" for path, reason in self.problems]
        return "\n".join(lines)

    def __reduce__(self) -> tuple[type, tuple[list[tuple[str, str]], Path | None]]:
        # Keep the exception picklable (parallel runners send exceptions across processes).
        return (type(self), (self.problems, self.root))


@dataclass
class IngestedDataset:
    """A verified dataset in canonical form.

    The manifest is normalised on construction (:func:`build_manifest`): optional columns
    an adapter did not fill get their :data:`MANIFEST_DEFAULTS`, columns are put in
    :data:`MANIFEST_COLUMNS` order with fixed dtypes, so every adapter's output has the
    same schema.

    Attributes:
        manifest: One row per image, columns :data:`MANIFEST_COLUMNS`, index 0..n-1.
        images: ``id -> uint8 array (H, W, 3)``, RGB.
        masks: ``id -> uint8 array (H, W)``; 0 = background, 1 = foreground (class
            indices 1..K for multi-class datasets).
    """

    manifest: pd.DataFrame
    images: dict[str, np.ndarray]
    masks: dict[str, np.ndarray]

    def __post_init__(self) -> None:
        self.manifest = build_manifest(self.manifest)


def sha256_file(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file's bytes (same value as ``sha256sum``).

    Args:
        path: File to hash.
        chunk_size: Read size in bytes.

    Returns:
        64-character lowercase hex digest.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_array(a: np.ndarray) -> str:
    """SHA-256 hex digest of an array's content, dtype and shape.

    Dtype and shape are part of the digest, so a ``(2, 3)`` and a ``(3, 2)`` array with
    the same bytes differ; memory layout is not (the array is hashed in C order).

    Args:
        a: Array to hash.

    Returns:
        64-character lowercase hex digest.
    """
    a = np.ascontiguousarray(a)
    digest = hashlib.sha256()
    digest.update(f"{a.dtype.str}{a.shape}".encode())
    digest.update(a.data)
    return digest.hexdigest()


# --------------------------------------------------------------------------- manifest


def manifest_row(
    *,
    sample_id: str,
    dataset: str,
    split: str,
    root: Path,
    image_path: Path,
    annotation_paths: Iterable[Path],
    image: np.ndarray,
    mask: np.ndarray,
    image_sha256: str,
    group: str = "",
) -> dict[str, object]:
    """One manifest row for a verified image and its canonical mask.

    Args:
        sample_id: Unique id within the dataset.
        dataset: Dataset name.
        split: Official split hint, one of :data:`SPLITS`.
        root: Raw dataset root; paths are stored relative to it.
        image_path: Raw image file.
        annotation_paths: Raw annotation file(s), joined by ``";"`` when several.
        image: Canonical RGB uint8 image ``(H, W, 3)``.
        mask: Canonical uint8 mask ``(H, W)``.
        image_sha256: SHA-256 of the raw image file (:func:`sha256_file`).
        group: Group that splits must keep together (``""``: none).

    Returns:
        A dict with the keys of :data:`MANIFEST_COLUMNS`.
    """
    if split not in SPLITS:
        raise ValueError(f"sample {sample_id!r}: split {split!r} is not one of {SPLITS}")
    return {
        "id": sample_id,
        "dataset": dataset,
        "split": split,
        "image_path": image_path.relative_to(root).as_posix(),
        "annotation_path": ";".join(p.relative_to(root).as_posix() for p in annotation_paths),
        "height": int(image.shape[0]),
        "width": int(image.shape[1]),
        "channels": int(image.shape[2]),
        "image_sha256": image_sha256,
        "mask_sha256": sha256_array(mask),
        "foreground_fraction": float(np.count_nonzero(mask) / mask.size),
        "group": group,
    }


def build_manifest(rows: pd.DataFrame | Iterable[Mapping[str, object]]) -> pd.DataFrame:
    """A manifest frame with exactly :data:`MANIFEST_COLUMNS`, in order, with fixed dtypes.

    Missing optional columns (and missing values in them) get :data:`MANIFEST_DEFAULTS`;
    integer columns are int64, ``foreground_fraction`` float64, the rest strings.

    Args:
        rows: A frame, or row dicts (e.g. from :func:`manifest_row`).

    Returns:
        A new frame with index 0..n-1.

    Raises:
        ValueError: A required column is missing.
    """
    frame = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    for column, default in MANIFEST_DEFAULTS.items():
        if column not in frame.columns:
            frame[column] = default
        frame[column] = frame[column].where(frame[column].notna(), default)
    missing = [c for c in MANIFEST_COLUMNS if c not in frame.columns]
    if missing and len(frame):
        raise ValueError(f"manifest is missing required columns {missing}")
    frame = frame.reindex(columns=MANIFEST_COLUMNS)
    dtypes: dict[str, str | type] = {c: str for c in MANIFEST_COLUMNS}
    dtypes.update({c: "int64" for c in _INT_COLUMNS})
    dtypes.update({c: "float64" for c in _FLOAT_COLUMNS})
    return frame.astype(dtypes).reset_index(drop=True)


def proportional_counts(n: int, fractions: tuple[float, ...]) -> list[int]:
    """Split ``n`` items into consecutive parts of the given fractions.

    Every part but the first gets ``round(n * fraction)`` items, at least one when there
    are enough items for every part to have one (so a small dataset still gets a
    validation and a test part); the first part gets the rest.

    Args:
        n: Number of items.
        fractions: Fraction of each part; they should sum to 1.

    Returns:
        One count per part, summing to ``n``.
    """
    counts = [round(n * f) for f in fractions[1:]]
    if n >= len(fractions):
        counts = [max(1, c) for c in counts]
    while sum(counts) > n:  # only with fractions summing to more than 1
        counts[counts.index(max(counts))] -= 1
    return [n - sum(counts), *counts]


class DuplicateFinder:
    """Remembers content hashes and says which earlier file had the same content."""

    def __init__(self) -> None:
        self._first: dict[str, Path] = {}

    def check(self, digest: str, path: Path) -> str | None:
        """Record ``path`` under ``digest``; the reason it is a duplicate, or None."""
        if digest in self._first:
            return f"duplicate image: identical pixels to {self._first[digest]}"
        self._first[digest] = path
        return None


# --------------------------------------------------------------------------- files


def list_files(folder: Path, suffixes: Iterable[str]) -> dict[str, list[Path]]:
    """Files in ``folder`` with one of ``suffixes`` (case-insensitive), grouped by stem.

    Hidden files (``.*``, e.g. macOS ``._x.png`` resource forks) are skipped; a missing
    folder gives an empty dict. Stems are in sorted order, paths of one stem too.
    """
    wanted = {s.lower() for s in suffixes}
    found: dict[str, list[Path]] = defaultdict(list)
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in wanted:
                found[path.stem].append(path)
    return dict(found)


def warn_unread(
    name: str,
    root: Path,
    folders: Iterable[Path],
    used: Collection[Path],
    skip: Callable[[Path], bool] = lambda path: False,
) -> None:
    """Log (warning) the files in the dataset's ``folders`` that the adapter does not read:
    not in ``used``, not hidden (``.DS_Store``...) and not ``skip``-ped (licence files)."""
    ignored = sorted(
        path
        for folder in set(folders)
        if folder.is_dir()
        for path in folder.iterdir()
        if path.is_file() and path not in used and not path.name.startswith(".")
        and not skip(path)
    )
    if ignored:
        logger.warning(
            "%s at %s: ignored %d file(s) that are not image/annotation files: %s",
            name,
            root,
            len(ignored),
            ", ".join(p.relative_to(root).as_posix() for p in ignored[:10])
            + (" ..." if len(ignored) > 10 else ""),
        )


def duplicate_ids(items: Iterable[tuple[str, Path]]) -> list[Problem]:
    """One problem per ``(id, image path)`` whose id an earlier item already has."""
    first: dict[str, Path] = {}
    problems: list[Problem] = []
    for item_id, path in items:
        if item_id in first:
            problems.append((str(path), f"duplicate id {item_id!r} (also {first[item_id]})"))
        else:
            first[item_id] = path
    return problems


def read_raster(path: Path) -> np.ndarray:
    """Read a 2D raster image as stored, in RGB(A) channel order.

    TIFF files are read with tifffile (first series; planar ``(C, H, W)`` is moved to
    ``(H, W, C)``), everything else with OpenCV ``IMREAD_UNCHANGED`` (so 16-bit PNGs stay
    16-bit and a grey BMP stays single-channel), BGR(A) reordered to RGB(A). JPEG EXIF
    orientation is not applied: pixels are taken as stored, like their masks.

    Args:
        path: Image file.

    Returns:
        ``(H, W)`` or ``(H, W, C)`` array of the file's dtype.

    Raises:
        ValueError: The file cannot be decoded; the message is the reason.
    """
    import cv2

    path = Path(path)
    if path.suffix.lower() in {".tif", ".tiff"}:
        import tifffile

        try:
            with tifffile.TiffFile(path) as tif:
                if not tif.series:
                    raise ValueError("unreadable TIFF: no image data")
                image = tif.series[0].asarray()
        except ValueError as err:
            if str(err).startswith("unreadable TIFF"):
                raise
            raise ValueError(f"unreadable TIFF: {err}") from err
        except Exception as err:  # tifffile/codecs raise many types (zlib.error, ...)
            raise ValueError(f"unreadable TIFF: {type(err).__name__}: {err}") from err
        while image.ndim > 2 and image.shape[0] == 1:
            image = image[0]
        if image.ndim == 3 and image.shape[0] in (3, 4) and image.shape[-1] not in (3, 4):
            image = np.moveaxis(image, 0, -1)
    else:
        try:
            data = np.fromfile(path, dtype=np.uint8)  # also handles non-ASCII paths
        except OSError as err:
            raise ValueError(f"unreadable image file: {err}") from err
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
        if image is None:
            kind = path.suffix.lstrip(".").upper() or "image"
            raise ValueError(f"unreadable {kind}: OpenCV cannot decode the file")
        if image.ndim == 3 and image.shape[-1] == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        elif image.ndim == 3 and image.shape[-1] == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3) or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"expected a 2D image, got an array of shape {image.shape}")
    return np.ascontiguousarray(image)


def label_image_2d(image: np.ndarray) -> np.ndarray:
    """A label image as ``(H, W)``: single-channel as is, grey RGB(A) reduced to one channel.

    Raises:
        ValueError: A colour image (channels differ) or a non-integer one; the message
            is the reason.
    """
    if not np.issubdtype(image.dtype, np.integer):
        raise ValueError(f"expected an integer label image, got pixel type {image.dtype}")
    if image.ndim == 2:
        return image
    rgb = image[..., :3]
    if (rgb == rgb[..., :1]).all():
        return np.ascontiguousarray(rgb[..., 0])
    raise ValueError(
        f"expected a single-channel label image, got a colour image of shape {image.shape} "
        "whose channels differ"
    )


def accept_pair(
    sample: RawSample,
    image: np.ndarray | None,
    mask: np.ndarray | None,
    *,
    root: Path,
    dataset_name: str,
    problems: list[tuple[str, str]],
    duplicates: DuplicateFinder,
    images: dict[str, np.ndarray],
    masks: dict[str, np.ndarray],
    rows: list[dict[str, object]],
    mask_word: str = "mask",
    max_side: int | None = None,
) -> None:
    """The checks every adapter makes once a sample's image and mask were read.

    The mask must match its image's size and the image must not duplicate an earlier one
    (both reported into ``problems``). The pair is recorded (image, mask, manifest row)
    only while no problem has been found anywhere: verification goes on over every file,
    but nothing partial is kept.

    Args:
        image / mask: What the adapter read (``None`` when reading failed; the adapter
            has already reported why).
        mask_word: How the message names the mask (``"annotation"`` for GlaS).
        max_side: Keep the pair downscaled so that its longer side is at most this
            (:func:`limit_side`), after the checks on the original files.
    """
    if image is not None and mask is not None and mask.shape != image.shape[:2]:
        problems.append((
            str(sample.annotation_path),
            f"{mask_word} is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image "
            f"{sample.image_path.name} is {image.shape[1]}x{image.shape[0]}",
        ))
        mask = None
    if image is not None:
        duplicate = duplicates.check(sha256_array(image), sample.image_path)
        if duplicate:
            problems.append((str(sample.image_path), duplicate))
            return
    if image is None or mask is None or problems:
        return
    if max_side is not None:
        image, mask = limit_side(image, mask, max_side)
    images[sample.id], masks[sample.id] = image, mask
    rows.append(
        manifest_row(
            sample_id=sample.id,
            dataset=dataset_name,
            split=sample.split,
            root=root,
            image_path=sample.image_path,
            annotation_paths=[sample.annotation_path],
            image=image,
            mask=mask,
            image_sha256=sha256_file(sample.image_path),
        )
    )


def read_and_verify_pairs(
    samples: Iterable[RawSample],
    read_image: Callable[[Path], np.ndarray],
    read_mask: Callable[[Path], np.ndarray],
    *,
    root: Path,
    dataset_name: str,
    problems: list[tuple[str, str]],
    mask_word: str = "mask",
    max_side: int | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], list[dict[str, object]]]:
    """Read every sample's image and mask, verify them, and collect what passes.

    ``read_image`` / ``read_mask`` raise ``ValueError`` with the reason a file is bad;
    each reason is appended to ``problems`` with the file's path (a missing mask was
    reported when the samples were listed). Returns ``(images, masks, manifest_rows)``,
    meaningful only when ``problems`` stays empty (see :func:`accept_pair`).

    With ``max_side``, each pair is downscaled as soon as it is verified, so memory holds
    one full-size pair at a time (ISIC 2018's 2594 JPEGs decode to tens of GB).
    """
    images: dict[str, np.ndarray] = {}
    masks: dict[str, np.ndarray] = {}
    rows: list[dict[str, object]] = []
    duplicates = DuplicateFinder()
    for sample in samples:
        image: np.ndarray | None = None
        try:
            image = read_image(sample.image_path)
        except ValueError as err:
            problems.append((str(sample.image_path), str(err)))
        mask: np.ndarray | None = None
        if sample.annotation_path.is_file():
            try:
                mask = read_mask(sample.annotation_path)
            except ValueError as err:
                problems.append((str(sample.annotation_path), str(err)))
        accept_pair(
            sample, image, mask, root=root, dataset_name=dataset_name, problems=problems,
            duplicates=duplicates, images=images, masks=masks, rows=rows, mask_word=mask_word,
            max_side=max_side,
        )
    if max_side is not None:
        logger.info("images and masks kept with their longer side at most %d px", max_side)
    return images, masks, rows


def limit_side(image: np.ndarray, mask: np.ndarray,
               max_side: int) -> tuple[np.ndarray, np.ndarray]:
    """Downscale an image and its label mask so the longer side is at most ``max_side``.

    The image is area-averaged (no aliasing), the mask takes the nearest label (labels
    are never blended). Pairs already small enough are returned as they are.
    """
    import cv2

    if max_side < 1:
        raise ValueError(f"max_side must be >= 1, got {max_side}")
    height, width = mask.shape
    if max(height, width) <= max_side:
        return image, mask
    scale = max_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))  # cv2: (W, H)
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    if small.ndim == 2:  # cv2 drops a trailing channel axis of size 1
        small = small[..., None]
    return small, cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)


def finish_ingestion(
    label: str,
    root: Path,
    problems: list[tuple[str, str]],
    rows: list[dict[str, object]],
    images: dict[str, np.ndarray],
    masks: dict[str, np.ndarray],
    detail: str = "",
) -> IngestedDataset:
    """End of every adapter: raise every problem at once, or build and log the result.

    Args:
        label: The dataset's name in the log line (``"GlaS"``).
        detail: Extra facts for the log line (``"412 cells"``).
    """
    if problems:
        raise DatasetValidationError(problems, root)
    manifest = build_manifest(rows)
    splits = ", ".join(f"{k}={v}" for k, v in sorted(manifest["split"].value_counts().items()))
    logger.info(
        "Loaded %s from %s: %d images (%s)%s, mean foreground fraction %.3f",
        label, root, len(manifest), splits, f", {detail}" if detail else "",
        manifest["foreground_fraction"].mean(),
    )
    return IngestedDataset(manifest=manifest, images=images, masks=masks)
