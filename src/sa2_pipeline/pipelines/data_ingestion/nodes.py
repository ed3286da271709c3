"""Read a dataset in its original download format, verify it, write a manifest and masks."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sa2_pipeline.config import IngestionConfig, ModelConfig, parse
from sa2_pipeline.datasets.registry import load_raw_dataset

logger = logging.getLogger(__name__)


def prepare_raw_data(params: dict[str, Any]) -> str:
    """Return the raw data folder, generating the embedded synthetic data if it is missing.

    A folder that already holds any file is never touched (it is the user's data).

    Args:
        params: ``params:data_ingestion``.

    Returns:
        The raw data folder.
    """
    from sa2_pipeline.datasets.synthetic import ensure_synthetic_monuseg

    cfg = parse(IngestionConfig, params, "data_ingestion")
    root = Path(cfg.raw_dir)
    if cfg.synthetic is not None and cfg.synthetic.generate_if_missing:
        s = cfg.synthetic
        if ensure_synthetic_monuseg(
            root, n_train=s.n_train, n_test=s.n_test, image_size=s.image_size, seed=s.seed
        ):
            logger.info("generated the embedded synthetic dataset in %s", root)
    return str(root)


def ingest_raw_dataset(
    raw_dir: str, params: dict[str, Any], model: dict[str, Any] | None = None
) -> tuple[pd.DataFrame, dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Verify every raw file, then return the manifest, images and canonical masks.

    Nothing is returned (so nothing is written) unless the whole dataset is valid; the
    error lists every bad file and its problem at once.

    Args:
        raw_dir: The raw data folder.
        params: ``params:data_ingestion``.
        model: ``params:model``: its ``num_classes`` bounds the mask labels.

    Returns:
        ``(manifest, images, masks, instances)``: one manifest row per image; RGB uint8
        images and uint8 label masks (0 = background) by image id; uint16 instance maps by
        id for datasets with instance labels (else empty).
    """

    cfg = parse(IngestionConfig, params, "data_ingestion")
    num_classes = None if model is None else parse(ModelConfig, model, "model").num_classes
    ingested = load_raw_dataset(cfg.format, raw_dir, dataset_name=cfg.dataset,
                                max_side=cfg.max_side, mask_kind=cfg.mask_kind,
                                num_classes=num_classes)
    counts = ingested.manifest["split"].value_counts().to_dict()
    logger.info("ingested %d images from %s: %s", len(ingested.manifest), raw_dir, counts)
    return ingested.manifest, ingested.images, ingested.masks, ingested.instances
