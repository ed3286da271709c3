"""Fingerprints that decide whether a checkpoint belongs to a run.

A checkpoint is resumed only when the run's fingerprint (model, result-changing settings,
exact data, and the code that computes the result) equals the one it was written with.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from sa2_pipeline.config import ModelConfig, TrainingConfig

# Settings that change how fast a run goes but not what it computes: they do not enter
# the fingerprint, so a run can be resumed with more workers or threads.
# ``distributed`` is here too although it does change the result (``batch_size`` is per
# process, so the world size changes every step's batch): a run may be resumed with
# another number of processes or nodes -- it continues correctly but does not end
# bit-identical to an uninterrupted run with either world size. Resuming with the same
# world size is exact.
_RUNTIME_ONLY = (
    "num_workers", "num_threads", "resume", "checkpoint_dir", "val_batch_size", "distributed",
)

# The code that determines a training result: whole packages, plus the three inference
# modules that validation (and so model selection) runs through. The rest of
# ``inference`` (whole-slide and folder inference), and the registry, the served model and
# run tracking in ``tracking``, are deliberately not here: editing them never invalidates
# a checkpoint.
_CODE_PACKAGES = ("engine", "models", "losses", "dataloading", "metrics")
_CODE_MODULES = ("inference/precision.py", "inference/predict.py", "inference/sliding_window.py")


def code_fingerprint(root: str | Path | None = None) -> str:
    """Hash of the library code that determines a training result.

    Part of the run fingerprint, so a checkpoint written by older code (a bug fix, a new
    loss) is never resumed as if it were this code's: the run starts over instead.

    Args:
        root: The ``sa2_pipeline`` package folder; default the imported package's.
    """
    if root is None:
        import sa2_pipeline

        root = Path(sa2_pipeline.__file__).parent
    root = Path(root)
    files = [f for package in _CODE_PACKAGES for f in sorted((root / package).rglob("*.py"))]
    files += [root / module for module in _CODE_MODULES]
    h = hashlib.sha256()
    for file in files:
        h.update(file.relative_to(root).as_posix().encode())
        h.update(file.read_bytes())
    return h.hexdigest()


def run_fingerprint(
    model_cfg: ModelConfig,
    train_cfg: TrainingConfig,
    train_images: Mapping[str, np.ndarray],
    train_masks: Mapping[str, np.ndarray],
    val_images: Mapping[str, np.ndarray],
    extra: Mapping[str, Any] | None = None,
    val_masks: Mapping[str, np.ndarray] | None = None,
) -> str:
    """A hash of the model, the settings that affect results and the exact data.

    ``val_masks`` enter too: they decide which epoch is kept as the best model, so a
    checkpoint selected against other validation masks is not resumed.
    """
    settings = {k: v for k, v in asdict(train_cfg).items() if k not in _RUNTIME_ONLY}
    h = hashlib.sha256()
    h.update(json.dumps([asdict(model_cfg), settings, dict(extra or {})], sort_keys=True,
                        default=str).encode())
    parts = [("train", train_images), ("mask", train_masks), ("val", val_images)]
    if val_masks is not None:
        parts.append(("val_mask", val_masks))
    for name, bundle in parts:
        for key in sorted(bundle):
            arr = np.ascontiguousarray(bundle[key])
            h.update(f"{name}/{key}/{arr.shape}/{arr.dtype}".encode())
            h.update(arr.data)
    return h.hexdigest()
