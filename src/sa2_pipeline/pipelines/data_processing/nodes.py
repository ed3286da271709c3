"""Dataset fingerprint, leakage-free splits and cached model inputs.

The logic lives in :mod:`sa2_pipeline.splits` and
:mod:`sa2_pipeline.dataloading.model_inputs`; these nodes parse the parameters and call it.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from sa2_pipeline.config import ProcessingConfig, parse

logger = logging.getLogger(__name__)


def compute_fingerprint(
    manifest: pd.DataFrame, images: dict[str, np.ndarray], masks: dict[str, np.ndarray]
) -> dict[str, Any]:
    """Sizes, intensity statistics (non-test images only) and foreground fraction."""
    from sa2_pipeline.dataloading.model_inputs import dataset_fingerprint

    return dataset_fingerprint(manifest, images, masks)


def split_dataset(manifest: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
    """Assign every image its official split and, for K-fold, its fold.

    See :mod:`sa2_pipeline.splits` for the rules (test never in a fold, an official
    validation split gives one fold, seeded K-fold by id or by ``group`` otherwise).

    Returns:
        A frame with columns ``id``, ``split`` (train / val / test) and ``fold``: the fold
        a train image validates in (``-1`` for val and test rows).
    """
    from sa2_pipeline.splits import assign_folds

    cfg = parse(ProcessingConfig, params, "data_processing")
    frame = assign_folds(manifest, cfg.n_folds, cfg.split_seed)
    logger.info("splits: %s; folds: %s", frame["split"].value_counts().to_dict(),
                frame.loc[frame["fold"] >= 0, "fold"].value_counts().sort_index().to_dict())
    return frame


def build_model_inputs(
    images: dict[str, np.ndarray],
    masks: dict[str, np.ndarray],
    splits: pd.DataFrame,
    params: dict[str, Any],
    instances: dict[str, np.ndarray] | None = None,
) -> tuple[dict, dict]:
    """Cache the arrays training and evaluation consume.

    ``model_input_trainval`` holds every non-test image: full size in ``native`` mode,
    resized to ``resize_to`` in ``resize`` mode as the paper does. ``model_input_test``
    stays at native resolution and carries the test images' instance maps, if any.

    Returns:
        Two ``{"images": {id: arr}, "masks": {id: arr}}`` bundles: trainval and test.
    """
    from sa2_pipeline.dataloading.model_inputs import build_model_inputs as build

    cfg = parse(ProcessingConfig, params, "data_processing")
    return build(images, masks, splits,
                 resize_to=cfg.resize_to if cfg.mode == "resize" else None,
                 instances=instances)
