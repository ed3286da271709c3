"""Soft Dice loss on logits, binary (sigmoid) and multi-class (softmax).

The binary form is the release's definition (docs/protocol.md): per image
``1 - (2 * sum(p * t) + eps) / (sum(p**2) + sum(t**2) + eps)`` on ``p = sigmoid(logits)``,
then averaged over the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["soft_dice_loss"]


def _binary_target(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Bring a binary target to the logits' shape ``(N, 1, H, W)`` as float32."""
    if target.dim() == logits.dim() - 1:
        target = target.unsqueeze(1)
    if target.shape != logits.shape:
        raise ValueError(
            f"binary Dice: target shape {tuple(target.shape)} does not match logits shape "
            f"{tuple(logits.shape)}; expected (N, 1, H, W) or (N, H, W)"
        )
    return target.float()


def _multiclass_target(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Turn integer targets ``(N, H, W)`` or ``(N, 1, H, W)`` into a one-hot float32 tensor."""
    if target.dim() == logits.dim() and target.shape[1] == 1:
        target = target[:, 0]
    expected = (logits.shape[0], *logits.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(
            f"multi-class Dice: target shape {tuple(target.shape)} does not match the expected "
            f"{expected} (integer class indices for logits {tuple(logits.shape)})"
        )
    if target.is_floating_point():
        raise ValueError(
            "multi-class Dice: target must hold integer class indices, got a float tensor"
        )
    num_classes = logits.shape[1]
    target = target.long()
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= num_classes):
        raise ValueError(
            f"multi-class Dice: target values must lie in [0, {num_classes - 1}], "
            f"got [{int(target.min())}, {int(target.max())}]"
        )
    one_hot = F.one_hot(target, num_classes)  # (N, *spatial, C)
    return one_hot.movedim(-1, 1).float()


def _probabilities_and_targets(
    logits: torch.Tensor, target: torch.Tensor, *, multiclass: bool, ignore_background: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(probabilities, float targets)``, both ``(N, C, *spatial)``, from float32 logits."""
    if multiclass:
        if logits.shape[1] < 2:
            raise ValueError(
                f"multi-class Dice needs at least 2 channels, got logits {tuple(logits.shape)}"
            )
        probs = torch.softmax(logits, dim=1)
        target_f = _multiclass_target(logits, target)
        if ignore_background:
            probs, target_f = probs[:, 1:], target_f[:, 1:]
        return probs, target_f
    if logits.shape[1] != 1:
        raise ValueError(
            f"binary Dice expects one logit channel, got logits {tuple(logits.shape)}; "
            "pass multiclass=True for C > 1"
        )
    if ignore_background:
        raise ValueError("ignore_background only applies to multi-class Dice")
    return torch.sigmoid(logits), _binary_target(logits, target)


def soft_dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    squared_denominator: bool = True,
    eps: float = 1e-5,
    multiclass: bool = False,
    ignore_background: bool = False,
) -> torch.Tensor:
    """Soft Dice loss computed per image (and per class), then averaged.

    Computed in float32 with autocast disabled, so it is safe under mixed precision.

    Args:
        logits: Raw model outputs. Binary: ``(N, 1, H, W)``. Multi-class: ``(N, C, H, W)``.
            Any number of spatial dimensions is accepted.
        target: Binary: ``(N, 1, H, W)`` or ``(N, H, W)`` with values in {0, 1} (soft values
            are accepted). Multi-class: integer class indices ``(N, H, W)`` or ``(N, 1, H, W)``.
        squared_denominator: Use ``sum(p**2) + sum(t**2)`` in the denominator (the release's
            form); otherwise ``sum(p) + sum(t)``.
        eps: Smoothing added to numerator and denominator; an image (class) that is empty in
            both prediction and target scores a Dice of 1, i.e. zero loss.
        multiclass: Softmax over channels and one-hot targets instead of a sigmoid.
        ignore_background: Multi-class only: leave class 0 out of the average.

    Returns:
        Scalar float32 tensor: the mean over images (and classes) of ``1 - Dice``.

    Raises:
        ValueError: On inconsistent shapes, bad target values or arguments.
    """
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    if logits.dim() < 3:
        raise ValueError(f"logits must be (N, C, *spatial), got shape {tuple(logits.shape)}")
    with torch.autocast(device_type=logits.device.type, enabled=False):
        probs, target_f = _probabilities_and_targets(
            logits.float(), target, multiclass=multiclass, ignore_background=ignore_background
        )
        spatial = tuple(range(2, probs.dim()))
        intersection = (probs * target_f).sum(dim=spatial)  # (N, C)
        if squared_denominator:
            denominator = (probs * probs).sum(dim=spatial) + (target_f * target_f).sum(dim=spatial)
        else:
            denominator = probs.sum(dim=spatial) + target_f.sum(dim=spatial)
        dice = (2.0 * intersection + eps) / (denominator + eps)  # (N, C)
        return (1.0 - dice).mean()
