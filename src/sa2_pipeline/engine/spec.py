"""``FitSpec``: everything one training run needs, in one frozen, picklable object.

:func:`sa2_pipeline.engine.fit.fit` takes it; the ``torchrun`` launcher sends it whole to
its workers (:mod:`sa2_pipeline.engine.distributed`), which call ``fit`` with it again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sa2_pipeline.config import ModelConfig, TrainingConfig
from sa2_pipeline.engine.fingerprint import code_fingerprint, run_fingerprint

MODES = ("native", "resize")


@dataclass(frozen=True, eq=False)
class FitSpec:
    """One training run: the data, the model and training settings, and its options.

    Attributes:
        train_images / train_masks: uint8 HWC images and uint8 HW label masks by id.
        val_images / val_masks: The validation split (never the test set).
        model_cfg / train_cfg: Parsed ``params:model`` / ``params:training``.
        mode: ``"native"`` samples ``patch_size`` patches from full-size images;
            ``"resize"`` trains on the (already resized) whole images, as the paper.
        eval_patch_size: Sliding-window tile size for validation and later inference.
        run_name: Names the checkpoint folder (e.g. ``"fold0"``).
        callbacks: Extra trainer callbacks; with several processes they must be
            picklable, and they run on rank 0 only.

    Raises:
        ValueError: An empty split, images and masks that do not pair up, or an unknown
            ``mode``.
    """

    train_images: Mapping[str, np.ndarray]
    train_masks: Mapping[str, np.ndarray]
    val_images: Mapping[str, np.ndarray]
    val_masks: Mapping[str, np.ndarray]
    model_cfg: ModelConfig
    train_cfg: TrainingConfig
    mode: str = "native"
    eval_patch_size: int = 256
    run_name: str = "run"
    callbacks: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        _check_pairs(self.train_images, self.train_masks, "training")
        _check_pairs(self.val_images, self.val_masks, "validation")
        if self.mode not in MODES:
            raise ValueError(f"mode must be 'native' or 'resize', got {self.mode!r}")
        # Plain containers: the spec is pickled for the torchrun workers.
        for name in ("train_images", "train_masks", "val_images", "val_masks"):
            object.__setattr__(self, name, dict(getattr(self, name)))
        object.__setattr__(self, "callbacks", tuple(self.callbacks))

    @property
    def train_ids(self) -> list[str]:
        return sorted(self.train_images)

    @property
    def val_ids(self) -> list[str]:
        return sorted(self.val_images)

    def fingerprint(self) -> str:
        """Hash of the model, the result-changing settings, the data and the code."""

        return run_fingerprint(
            self.model_cfg, self.train_cfg, self.train_images, self.train_masks,
            self.val_images,
            extra={"mode": self.mode, "eval_patch_size": self.eval_patch_size,
                   "code": code_fingerprint()},
            val_masks=self.val_masks,
        )

    def run_folder(self, fingerprint: str) -> Path:
        """The run's checkpoint folder: one per run name and fingerprint."""
        return Path(self.train_cfg.checkpoint_dir) / f"{self.run_name}-{fingerprint[:12]}"


def _check_pairs(images: Mapping[str, Any], masks: Mapping[str, Any], what: str) -> None:
    if not images:
        raise ValueError(f"the {what} split is empty")
    missing = sorted(set(images) ^ set(masks))
    if missing:
        raise ValueError(f"{what} images and masks do not pair up; unmatched ids: {missing}")
