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
from sa2_pipeline.user_errors import UserError

logger = logging.getLogger(__name__)


def save_atomic(obj: Any, path: str | Path) -> Path:
    """``torch.save`` ``obj`` to ``path`` atomically (temporary file, fsync, rename)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getbuffer())


class CheckpointError(UserError, ValueError):
    """A checkpoint file that cannot be resumed from; the message names it and what to do."""


def _numpy_globals() -> list[Any]:
    """What a checkpoint's numpy RNG state and numpy scalars unpickle through: arrays,
    dtypes and scalars of plain numeric types, never anything callable."""
    import numpy as np
    from numpy._core.multiarray import _reconstruct, scalar

    numeric = ("bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64",
               "int64", "float16", "float32", "float64")
    return [_reconstruct, scalar, np.ndarray, np.dtype, *(type(np.dtype(t)) for t in numeric)]


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_atomic` onto the CPU, weights-only.

    ``torch.load(weights_only=True)`` rebuilds tensors, containers, numbers and strings
    and, through :func:`_numpy_globals`, the numpy arrays of the RNG states; any other
    object (a planted pickle's ``os.system`` call, a class) is refused before it runs.

    Raises:
        CheckpointError: The file is truncated, not a checkpoint, or holds objects a
            checkpoint never holds; the message names it and says to delete it.
    """
    import pickle

    path = Path(path)
    advice = (f"delete {path} to train this run from scratch (it is only the resume "
              "state; the same command then starts over)")
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = str(err).strip().splitlines()[-1][:300] if str(err).strip() else "refused"
        raise CheckpointError(f"{path}: refused to load: it holds objects no checkpoint of "
                              f"this project holds ({reason}); {advice}") from err
    except Exception as err:  # noqa: BLE001 - re-raised with the file name
        raise CheckpointError(f"{path}: not a readable checkpoint "
                              f"({type(err).__name__}: {err}); {advice}") from err
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a checkpoint (holds a {type(state).__name__}); "
                              f"{advice}")
    return state
