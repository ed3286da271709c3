"""Types shared by every raw-dataset adapter.

An adapter reads one dataset in its original downloaded format, verifies all of it, and
returns an :class:`IngestedDataset`: a manifest (one row per image, columns
:data:`MANIFEST_COLUMNS`) plus every image and mask in canonical form. If anything is
wrong it raises one :class:`DatasetValidationError` that lists every bad file and why.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "MANIFEST_COLUMNS",
    "DatasetValidationError",
    "IngestedDataset",
    "RawSample",
    "sha256_array",
    "sha256_file",
]

#: Columns of the ingestion manifest, in order.
#:
#: - ``id``: unique image id within the dataset (for MoNuSeg the file stem).
#: - ``dataset``: dataset name, e.g. ``"monuseg"``.
#: - ``split``: official split hint, ``"train"`` or ``"test"``.
#: - ``image_path``, ``annotation_path``: raw files, POSIX paths relative to the raw
#:   dataset root (so the manifest does not change when the checkout moves).
#: - ``height``, ``width``, ``channels``: shape of the canonical image (channels is 3).
#: - ``image_sha256``: SHA-256 of the raw image *file* (matches ``sha256sum``).
#: - ``mask_sha256``: :func:`sha256_array` of the canonical mask.
#: - ``foreground_fraction``: fraction of mask pixels that are not background.
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
]

SPLITS: tuple[str, ...] = ("train", "test")


@dataclass(frozen=True)
class RawSample:
    """One image and its annotation file as found on disk.

    Attributes:
        id: Unique id within the dataset.
        split: Official split hint, ``"train"`` or ``"test"``.
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

    Attributes:
        manifest: One row per image, columns :data:`MANIFEST_COLUMNS`, index 0..n-1.
        images: ``id -> uint8 array (H, W, 3)``, RGB.
        masks: ``id -> uint8 array (H, W)``; 0 = background, 1 = foreground (class
            indices 1..K for multi-class datasets).
    """

    manifest: pd.DataFrame
    images: dict[str, np.ndarray]
    masks: dict[str, np.ndarray]


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
