"""Class-balanced binary cross-entropy on logits.

The release computes ``0.5 * mean BCE over positive pixels + 0.5 * mean BCE over negative
pixels`` pooled over the batch, on probabilities (``nn.BCELoss`` after a sigmoid, which clamps
``log`` at -100). Here the same quantity is computed from logits with
``F.binary_cross_entropy_with_logits``: identical where the clamp does not bite, and stable
for large logits and under autocast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["balanced_bce_with_logits"]


def balanced_bce_with_logits(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    positive_weight: float = 0.5,
) -> torch.Tensor:
    """Class-balanced BCE: weighted mean of the mean BCE over positives and over negatives.

    Pixels are pooled over the whole batch. A class absent from the batch contributes 0 (its
    term is dropped, not renormalised), so the loss is finite for all-background batches.
    Computed in float32 with autocast disabled.

    Args:
        logits: Raw outputs ``(N, 1, H, W)`` (any shape matching ``target``).
        target: Binary target ``(N, 1, H, W)`` or ``(N, H, W)``; a pixel is positive when
            its value is > 0.5.
        positive_weight: Weight of the positive term; the negative term gets
            ``1 - positive_weight``. The release uses 0.5.

    Returns:
        Scalar float32 tensor.

    Raises:
        ValueError: On shape mismatch or a weight outside [0, 1].
    """
    if not 0.0 <= positive_weight <= 1.0:
        raise ValueError(f"positive_weight must be in [0, 1], got {positive_weight}")
    if target.dim() == logits.dim() - 1 and logits.dim() >= 2 and logits.shape[1] == 1:
        target = target.unsqueeze(1)
    if target.shape != logits.shape:
        raise ValueError(
            f"balanced BCE: target shape {tuple(target.shape)} does not match logits shape "
            f"{tuple(logits.shape)}"
        )
    with torch.autocast(device_type=logits.device.type, enabled=False):
        logits = logits.float()
        target = target.float()
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        positive = (target > 0.5).float()
        negative = 1.0 - positive
        # Division by clamp(count, 1): an absent class gives 0 / 1 = 0, never NaN.
        pos_term = (bce * positive).sum() / positive.sum().clamp_min(1.0)
        neg_term = (bce * negative).sum() / negative.sum().clamp_min(1.0)
        return positive_weight * pos_term + (1.0 - positive_weight) * neg_term
