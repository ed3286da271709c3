"""Fingerprints that decide whether a checkpoint belongs to a run.

A checkpoint is resumed only when the run's fingerprint (model, result-changing settings,
exact data, and the code that computes the result) equals the one it was written with.
"""

from __future__ import annotations

import ast
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

# The code that determines a training result, relative to the ``sa2_pipeline`` package
# folder: whole packages, plus the metrics and inference modules that validation (and so
# model selection) runs through. This is the one list: the training stage's deps in dvc.yaml
# must cover every entry (tests/test_dvc_deps.py derives its check from it). The rest of
# ``inference`` (whole-slide and folder inference), and the registry, the served model and
# run tracking in ``tracking``, and the test-set metrics and promotion gate in ``metrics``
# are deliberately not here: editing them never invalidates a checkpoint.
TRAINING_CODE = (
    "engine",
    "models",
    "losses",
    "dataloading",
    "runtime",
    "metrics/__init__.py",
    "metrics/segmentation.py",
    "inference/predict.py",
    "inference/sliding_window.py",
)


def training_code_files(root: str | Path | None = None) -> list[Path]:
    """Every ``.py`` file of :data:`TRAINING_CODE` under ``root``, in a fixed order.

    Raises:
        FileNotFoundError: A listed package or module does not exist: a moved or renamed
            module must be moved in :data:`TRAINING_CODE` too, never drop out silently.
    """
    root = _package_root(root)
    files: set[Path] = set()
    for entry in TRAINING_CODE:
        path = root / entry
        if path.is_dir():
            files.update(path.rglob("*.py"))
        elif path.is_file() and path.suffix == ".py":
            files.add(path)
        else:
            raise FileNotFoundError(
                f"training code {entry!r} (engine/fingerprint.py, TRAINING_CODE) does not "
                f"exist under {root}: update the list (and dvc.yaml's training deps) when "
                "code moves"
            )
    return sorted(files, key=lambda f: f.relative_to(root).as_posix())


def code_fingerprint(root: str | Path | None = None) -> str:
    """Hash of what the library code that determines a training result computes.

    Part of the run fingerprint, so a checkpoint written by older code (a bug fix, a new
    loss) is never resumed as if it were this code's: the run starts over instead. Each
    file enters as its path and its syntax tree without docstrings (:func:`canonical_source`),
    so editing a comment, a docstring or the layout resumes; any change to what the code
    does starts over. (The tree is the running Python's: a new Python version may start
    runs over.)

    Args:
        root: The ``sa2_pipeline`` package folder; default this module's package.
    """
    root = _package_root(root)
    h = hashlib.sha256()
    for file in training_code_files(root):
        h.update(file.relative_to(root).as_posix().encode())
        h.update(b"\0")
        h.update(canonical_source(file.read_text(encoding="utf-8"), str(file)).encode())
        h.update(b"\0")
    return h.hexdigest()


def canonical_source(source: str, filename: str = "<unknown>") -> str:
    """The module's syntax tree with docstrings removed, as text (no comments, no layout)."""
    tree = ast.parse(source, filename=filename)
    for node in ast.walk(tree):
        if isinstance(node, _DOCUMENTED) and node.body and _is_docstring(node.body[0]):
            # A def or class needs a statement; a module may be empty (an empty
            # ``__init__.py`` and one with only a docstring compute the same).
            empty = [] if isinstance(node, ast.Module) else [ast.Pass()]
            node.body = node.body[1:] or empty
    return ast.dump(tree, annotate_fields=True, include_attributes=False)


_DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _is_docstring(statement: ast.stmt) -> bool:
    return (isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant)
            and isinstance(statement.value.value, str))


def _package_root(root: str | Path | None) -> Path:
    """``root``, or the ``sa2_pipeline`` folder this module lives in (without importing it)."""
    return Path(root) if root is not None else Path(__file__).resolve().parents[1]


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
