"""Whole-image prediction shared by validation, evaluation and the MLflow model."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np


def probabilities_to_mask(probs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Class probabilities (C, H, W) -> uint8 label mask (H, W).

    One channel: ``p > threshold`` gives {0, 1}. Several: argmax gives class indices.
    """
    if probs.ndim != 3:
        raise ValueError(f"expected probabilities (C, H, W), got shape {probs.shape}")
    if probs.shape[0] == 1:
        return (probs[0] > threshold).astype(np.uint8)
    return probs.argmax(axis=0).astype(np.uint8)


def predict_probabilities(
    model: Any,
    images: Iterable[tuple[str, np.ndarray]],
    *,
    num_classes: int,
    patch_size: int,
    overlap: float = 0.5,
    batch_size: int = 4,
    tta: bool = False,
    channel_order: str = "rgb",
    device: Any = None,
    autocast_dtype: Any = None,
) -> Iterable[tuple[str, np.ndarray]]:
    """Yield ``(id, probabilities (C, H, W) float32)`` for uint8 HWC images of any size.

    Images up to ``patch_size`` go through one forward pass; larger ones through a
    Gaussian-weighted sliding window (:mod:`sa2_pipeline.inference.sliding_window`).
    """
    from sa2_pipeline.inference.sliding_window import predict_image

    for image_id, image in images:
        probs = predict_image(
            model,
            image,
            patch_size=patch_size,
            overlap=overlap,
            batch_size=batch_size,
            tta=tta,
            num_classes=num_classes,
            channel_order=channel_order,
            device=device,
            autocast_dtype=autocast_dtype,
        )
        yield image_id, probs
