"""Validation during training: whole images through the sliding window, mean Dice and IoU."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from sa2_pipeline.inference.predict import predict_probabilities, probabilities_to_mask
from sa2_pipeline.metrics import score


def validate(
    model: Any,
    images: Mapping[str, np.ndarray],
    masks: Mapping[str, np.ndarray],
    *,
    num_classes: int,
    patch_size: int,
    batch_size: int,
    channel_order: str,
    device: Any,
    precision: str,
) -> dict[str, float]:
    """``{"val_dice", "val_iou"}``: means over the images (in id order) of the scores
    :func:`sa2_pipeline.metrics.score` gives, as evaluation scores the test set."""

    dices, ious = [], []
    stream = predict_probabilities(
        model, ((i, images[i]) for i in sorted(images)),
        num_classes=num_classes, patch_size=patch_size, batch_size=batch_size,
        channel_order=channel_order, device=device, precision=precision,
    )
    for image_id, probs in stream:
        scores = score(probabilities_to_mask(probs), masks[image_id], num_classes)
        dices.append(scores["dice"])
        ious.append(scores["iou"])
    return {"val_dice": float(np.mean(dices)), "val_iou": float(np.mean(ious))}
