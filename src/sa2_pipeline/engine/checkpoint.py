"""Atomic, self-describing training checkpoints.

A checkpoint is written to a temporary file beside its destination, flushed to disk and
renamed over the destination, so a run killed at any moment leaves either the previous
complete checkpoint or the new complete one, never a torn file.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import torch

from sa2_pipeline.io_utils import atomic_write_bytes

logger = logging.getLogger(__name__)


def save_atomic(obj: Any, path: str | Path) -> Path:
    """``torch.save`` ``obj`` to ``path`` atomically (temporary file, fsync, rename)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getbuffer())


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_atomic` onto the CPU.

    Raises:
        ValueError: The file is not a readable torch checkpoint (names the file).
    """
    path = Path(path)
    try:
        # Our checkpoints hold RNG states (numpy arrays, tuples), so they are not
        # weights-only files; they are only ever read from this project's own run folders.
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - re-raised with the file name
        raise ValueError(f"{path}: not a readable checkpoint ({err})") from err
