"""Overlap metrics for segmentation masks: Dice and IoU per image, per class, and summaries.

Definitions follow the release (docs/protocol.md): per image ``Dice = 2|P ∩ T| / (|P| + |T| + s)``
and ``IoU = |P ∩ T| / (|P ∪ T| + s)`` with ``s = 1e-5`` (one release script uses ``s = 1``),
averaged over images afterwards.

Convention: when prediction and target are both empty the image scores 1.0 for both metrics
(a correct "nothing here"); the release's formula would give 0 there.

numpy only at import; torch is imported inside :func:`batch_dice_from_logits`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from sa2_pipeline.config import PredictionConfig, check_threshold

if TYPE_CHECKING:
    import pandas as pd
    import torch

__all__ = [
    "batch_dice_from_logits",
    "dice_iou",
    "per_class_dice_iou",
    "score",
    "summarise",
]

logger = logging.getLogger(__name__)


def _check_same_shape(pred: np.ndarray, target: np.ndarray) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from target shape {target.shape}")


def _dice_iou_from_bool(pred: np.ndarray, target: np.ndarray, smooth: float) -> tuple[float, float]:
    pred_sum = int(np.count_nonzero(pred))
    target_sum = int(np.count_nonzero(target))
    if pred_sum == 0 and target_sum == 0:
        return 1.0, 1.0
    intersection = int(np.count_nonzero(pred & target))
    union = pred_sum + target_sum - intersection
    dice = 2.0 * intersection / (pred_sum + target_sum + smooth)
    iou = intersection / (union + smooth)
    return float(dice), float(iou)


def dice_iou(pred: np.ndarray, target: np.ndarray, smooth: float = 1e-5) -> tuple[float, float]:
    """Dice and IoU of one binary prediction against its target.

    Args:
        pred: Binary mask, any shape (e.g. ``(H, W)``); nonzero = foreground.
        target: Binary mask of the same shape; nonzero = foreground.
        smooth: ``s`` added to the denominators.

    Returns:
        ``(dice, iou)``; ``(1.0, 1.0)`` when both masks are empty.

    Raises:
        ValueError: If shapes differ or ``smooth < 0``.
    """
    if smooth < 0:
        raise ValueError(f"smooth must be >= 0, got {smooth}")
    pred, target = np.asarray(pred), np.asarray(target)
    _check_same_shape(pred, target)
    return _dice_iou_from_bool(pred != 0, target != 0, smooth)


def per_class_dice_iou(
    pred: np.ndarray,
    target: np.ndarray,
    num_classes: int,
    ignore_background: bool = True,
    smooth: float = 1e-5,
) -> dict[str, float]:
    """Dice and IoU for each class of a label image, plus their means.

    Args:
        pred: Predicted class indices ``(H, W)`` (integer).
        target: Target class indices ``(H, W)`` (integer), same shape.
        num_classes: Number of classes including background (class 0).
        ignore_background: Leave class 0 out (of the per-class entries and the means).
        smooth: ``s`` added to the denominators.

    Returns:
        ``{"dice_class_<k>": ..., "iou_class_<k>": ..., "dice_mean": ..., "iou_mean": ...}``;
        a class absent from both masks scores 1.0 (see the module's convention).

    Raises:
        ValueError: On shape mismatch, ``num_classes < 2`` or labels outside ``[0, num_classes)``.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 for per-class metrics, got {num_classes}")
    pred, target = np.asarray(pred), np.asarray(target)
    _check_same_shape(pred, target)
    for name, labels in (("prediction", pred), ("target", target)):
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(
                f"{name} labels must lie in [0, {num_classes - 1}], "
                f"got [{labels.min()}, {labels.max()}]"
            )
    first = 1 if ignore_background else 0
    result: dict[str, float] = {}
    dices, ious = [], []
    for cls in range(first, num_classes):
        dice, iou = _dice_iou_from_bool(pred == cls, target == cls, smooth)
        result[f"dice_class_{cls}"] = dice
        result[f"iou_class_{cls}"] = iou
        dices.append(dice)
        ious.append(iou)
    result["dice_mean"] = float(np.mean(dices))
    result["iou_mean"] = float(np.mean(ious))
    return result


def score(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> dict[str, float]:
    """Dice and IoU of one predicted mask, binary or multi-class, under one set of keys.

    This is the one scoring rule shared by validation during training and by test
    evaluation, so both read the same numbers from the same masks.

    Args:
        pred: Predicted mask ``(H, W)``: binary (nonzero = foreground) when
            ``num_classes == 1``, class indices otherwise.
        truth: Target mask of the same shape and kind.
        num_classes: Model output classes: 1 for a binary model, ``>= 2`` (background
            included) for a multi-class one.

    Returns:
        ``{"dice": ..., "iou": ...}``; multi-class adds ``dice_class_<k>`` and
        ``iou_class_<k>`` for each foreground class ``k`` and ``dice``/``iou`` are their
        means (background left out).

    Raises:
        ValueError: On a shape mismatch, ``num_classes < 1`` or labels out of range.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if num_classes == 1:
        dice, iou = dice_iou(pred, truth)
        return {"dice": dice, "iou": iou}
    scores = per_class_dice_iou(pred, truth, num_classes)
    out = {"dice": scores["dice_mean"], "iou": scores["iou_mean"]}
    out.update({k: v for k, v in scores.items() if "_class_" in k})
    return out


def batch_dice_from_logits(
    logits: torch.Tensor,
    target: torch.Tensor,
    threshold: float = PredictionConfig.threshold,
) -> torch.Tensor:
    """Hard Dice per image from logits, for validation during training.

    Binary (one channel): foreground where ``sigmoid(logits) > threshold``. Multi-class:
    ``argmax`` over channels, Dice per foreground class (1..C-1), averaged over those classes.
    Empty-vs-empty counts as 1.0 (per image, per class). No smoothing term.

    Args:
        logits: ``(N, 1, H, W)`` (binary) or ``(N, C, H, W)`` with ``C >= 2``.
        target: Binary ``(N, 1, H, W)`` / ``(N, H, W)`` in {0, 1}; multi-class integer class
            indices ``(N, H, W)`` / ``(N, 1, H, W)``.
        threshold: Probability threshold (binary only), in [0, 1].

    Returns:
        Float32 tensor ``(N,)`` of Dice scores, on the logits' device, without gradient.

    Raises:
        ValueError: On inconsistent shapes or a threshold outside [0, 1].
    """
    import torch

    if logits.dim() < 3:
        raise ValueError(f"logits must be (N, C, *spatial), got shape {tuple(logits.shape)}")
    num_channels = logits.shape[1]
    if target.dim() == logits.dim():
        if target.shape[1] != 1:
            raise ValueError(f"target must have one channel, got shape {tuple(target.shape)}")
        target = target[:, 0]
    expected = (logits.shape[0], *logits.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(
            f"target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)}"
        )

    with torch.no_grad():
        spatial = tuple(range(1, target.dim()))
        if num_channels == 1:
            check_threshold(threshold)
            pred_masks = (torch.sigmoid(logits[:, 0].float()) > threshold).unsqueeze(1)
            target_masks = (target > 0.5).unsqueeze(1)
        else:
            labels = logits.argmax(dim=1)
            classes = torch.arange(1, num_channels, device=logits.device).view(
                1, -1, *([1] * len(spatial))
            )
            pred_masks = labels.unsqueeze(1) == classes  # (N, C-1, *spatial)
            target_masks = target.long().unsqueeze(1) == classes
        sum_dims = tuple(range(2, pred_masks.dim()))
        intersection = (pred_masks & target_masks).sum(dim=sum_dims).float()
        denominator = (pred_masks.sum(dim=sum_dims) + target_masks.sum(dim=sum_dims)).float()
        dice = torch.where(denominator > 0, 2.0 * intersection / denominator.clamp_min(1.0), 1.0)
        return dice.mean(dim=1)


def summarise(per_image: pd.DataFrame) -> dict[str, float]:
    """Mean, standard deviation and median of each numeric metric column.

    Args:
        per_image: One row per image; numeric columns are metrics (e.g. ``dice``, ``iou``),
            other columns (e.g. ``image_id``) are ignored. NaNs are skipped.

    Returns:
        ``{"<col>_mean": ..., "<col>_std": ..., "<col>_median": ..., "n_images": N}``; the
        standard deviation is the population one (``ddof=0``), so it is defined for one image.

    Raises:
        ValueError: If the frame has no numeric column.
    """
    numeric = per_image.select_dtypes(include="number")
    if numeric.shape[1] == 0:
        raise ValueError(f"no numeric metric column in {list(per_image.columns)}")
    summary: dict[str, float] = {}
    for column in numeric.columns:
        values = numeric[column]
        summary[f"{column}_mean"] = float(values.mean())
        summary[f"{column}_std"] = float(values.std(ddof=0))
        summary[f"{column}_median"] = float(values.median())
    summary["n_images"] = len(per_image)
    return summary
