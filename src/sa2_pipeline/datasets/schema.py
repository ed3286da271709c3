"""The data every raw-dataset adapter produces, and how it reports bad input.

An adapter reads one dataset in its original downloaded format, verifies all of it, and
returns an :class:`IngestedDataset`: a manifest (one row per image, columns
:data:`MANIFEST_COLUMNS`) plus every image and mask in canonical form. If anything is
wrong it raises one :class:`DatasetValidationError` that lists every bad file and why
(one :data:`Problem` per file and reason).

This module holds only the types, the manifest schema and the content hashes that fill
it; reading rasters is :mod:`~sa2_pipeline.datasets.raster`, the verification workflow
:mod:`~sa2_pipeline.datasets.verify`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sa2_pipeline.user_errors import UserError

__all__ = [
    "KEY_SEPARATOR",
    "MANIFEST_COLUMNS",
    "MANIFEST_DEFAULTS",
    "SPLITS",
    "DatasetValidationError",
    "IngestedDataset",
    "Problem",
    "RawSample",
    "build_manifest",
    "manifest_row",
    "proportional_counts",
    "sha256_array",
    "sha256_file",
]

#: ``(path, reason)``: one entry of a :class:`DatasetValidationError`. Every adapter and
#: every check reports its findings in this one form.
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
#: - ``n_instances``: optional; the number of annotated objects in the image's instance
#:   map (ids 1..n, see :attr:`IngestedDataset.instances`), ``-1`` when the dataset has no
#:   instance labels (object metrics are then not computed).
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
    "n_instances",
]

#: Values of optional columns for adapters that do not set them.
MANIFEST_DEFAULTS: dict[str, object] = {"group": "", "n_instances": -1}

_INT_COLUMNS = ("height", "width", "channels", "n_instances")
_FLOAT_COLUMNS = ("foreground_fraction",)

#: Joins a group and an id into one key of the cached model inputs
#: (:class:`sa2_pipeline.kedro_io.ArrayBundleDataset`), so no id may contain it.
KEY_SEPARATOR = "::"

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


class DatasetValidationError(UserError, ValueError):
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
        instances: ``id -> uint16 array (H, W)``, one id per annotated object (0 =
            background, ids 1..n consecutive), for datasets with instance labels (MoNuSeg
            polygons, a folder with ``mask_kind: instances``); empty otherwise.
    """

    manifest: pd.DataFrame
    images: dict[str, np.ndarray]
    masks: dict[str, np.ndarray]
    instances: dict[str, np.ndarray] = field(default_factory=dict)

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
    instances: np.ndarray | None = None,
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
        instances: The canonical instance map (ids 1..n), or None.

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
        "n_instances": -1 if instances is None else int(instances.max(initial=0)),
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
