"""The training loss: Dice + (balanced BCE | cross-entropy), summed over deep-supervision heads.

Binary (``num_classes == 1``): ``dice_weight * Dice + bce_weight * balanced BCE`` per head
(the release: 0.5 / 0.5, squared-denominator Dice). Multi-class: ``ce_weight * CE +
dice_weight * multi-class Dice``. With deep supervision the per-head losses are summed with
``head_weights`` (the release sums its 4 heads with weight 1).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sa2_pipeline.losses.balanced_bce import balanced_bce_with_logits
from sa2_pipeline.losses.dice import soft_dice_loss

__all__ = ["SegmentationLoss", "build_loss"]

logger = logging.getLogger(__name__)

HeadOutputs = torch.Tensor | Sequence[torch.Tensor]


class SegmentationLoss(nn.Module):
    """Weighted sum of region and pixel losses over one or several output heads.

    Args:
        num_classes: 1 for binary segmentation (one logit channel), >= 2 for multi-class.
        dice_weight: Weight of the soft Dice term.
        bce_weight: Weight of the class-balanced BCE term (binary only).
        ce_weight: Weight of the cross-entropy term (multi-class only).
        head_weights: One weight per head for deep supervision; ``None`` = 1.0 for every head.
        squared_denominator: Dice denominator ``sum(p**2) + sum(t**2)`` (release) instead of
            ``sum(p) + sum(t)``.
        dice_eps: Smoothing constant of the Dice term.
        dice_ignore_background: Multi-class only: leave class 0 out of the Dice average.
        class_weights: Multi-class only: per-class weights of the cross-entropy.

    Raises:
        ValueError: For negative weights, ``num_classes < 1`` or arguments that do not apply.
    """

    def __init__(
        self,
        num_classes: int = 1,
        *,
        dice_weight: float = 0.5,
        bce_weight: float = 0.5,
        ce_weight: float = 0.5,
        head_weights: Sequence[float] | None = None,
        squared_denominator: bool = True,
        dice_eps: float = 1e-5,
        dice_ignore_background: bool = False,
        class_weights: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        for name, value in (
            ("dice_weight", dice_weight),
            ("bce_weight", bce_weight),
            ("ce_weight", ce_weight),
        ):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if head_weights is not None:
            head_weights = [float(w) for w in head_weights]
            if not head_weights or any(w < 0 for w in head_weights):
                raise ValueError(
                    f"head_weights must be a non-empty list of weights >= 0, got {head_weights}"
                )
        if num_classes == 1 and (dice_ignore_background or class_weights is not None):
            raise ValueError(
                "dice_ignore_background and class_weights apply only to num_classes > 1"
            )
        if class_weights is not None and len(class_weights) != num_classes:
            raise ValueError(f"class_weights needs {num_classes} values, got {len(class_weights)}")

        self.num_classes = num_classes
        self.dice_weight = float(dice_weight)
        self.bce_weight = float(bce_weight)
        self.ce_weight = float(ce_weight)
        self.head_weights = head_weights
        self.squared_denominator = squared_denominator
        self.dice_eps = dice_eps
        self.dice_ignore_background = dice_ignore_background
        self.register_buffer(
            "class_weights",
            None
            if class_weights is None
            else torch.tensor(list(class_weights), dtype=torch.float32),
            persistent=False,
        )

    @property
    def multiclass(self) -> bool:
        """Whether the loss treats outputs as multi-class logits."""
        return self.num_classes > 1

    def extra_repr(self) -> str:
        pixel = (
            f"ce_weight={self.ce_weight}" if self.multiclass else f"bce_weight={self.bce_weight}"
        )
        return (
            f"num_classes={self.num_classes}, dice_weight={self.dice_weight}, {pixel}, "
            f"head_weights={self.head_weights}"
        )

    def _match_resolution(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Upsample a lower-resolution head (integer factor) to the target's size."""
        target_size = tuple(target.shape[-(logits.dim() - 2) :])
        head_size = tuple(logits.shape[2:])
        if head_size == target_size:
            return logits
        if all(t % h == 0 for h, t in zip(head_size, target_size, strict=True)):
            return F.interpolate(
                logits, size=target_size, mode="bilinear" if logits.dim() == 4 else "nearest"
            )
        raise ValueError(
            f"head output spatial size {head_size} does not divide the target size {target_size}"
        )

    def _head_terms(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Unweighted loss terms for one head."""
        if logits.shape[1] != self.num_classes:
            raise ValueError(
                f"loss built for num_classes={self.num_classes} got logits with "
                f"{logits.shape[1]} channels "
                f"(shape {tuple(logits.shape)})"
            )
        logits = self._match_resolution(logits, target)
        dice = soft_dice_loss(
            logits,
            target,
            squared_denominator=self.squared_denominator,
            eps=self.dice_eps,
            multiclass=self.multiclass,
            ignore_background=self.dice_ignore_background,
        )
        if not self.multiclass:
            return {"dice": dice, "bce": balanced_bce_with_logits(logits, target)}
        ce_target = target[:, 0] if target.dim() == logits.dim() else target
        with torch.autocast(device_type=logits.device.type, enabled=False):
            ce = F.cross_entropy(logits.float(), ce_target.long(), weight=self.class_weights)
        return {"dice": dice, "ce": ce}

    def _combine(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.multiclass:
            return self.ce_weight * terms["ce"] + self.dice_weight * terms["dice"]
        return self.bce_weight * terms["bce"] + self.dice_weight * terms["dice"]

    def _compute(self, outputs: HeadOutputs, target: torch.Tensor) -> dict[str, torch.Tensor]:
        heads = [outputs] if isinstance(outputs, torch.Tensor) else list(outputs)
        if not heads:
            raise ValueError("outputs is an empty sequence of heads")
        weights = self.head_weights if self.head_weights is not None else [1.0] * len(heads)
        if isinstance(outputs, torch.Tensor):
            # A model without auxiliary heads (U-Net, eval mode): the main head counts once,
            # so the same loss settings serve every architecture.
            weights = [1.0]
        if len(weights) != len(heads):
            raise ValueError(f"got {len(heads)} head outputs but {len(weights)} head_weights")
        parts: dict[str, torch.Tensor] = {}
        weighted: list[torch.Tensor] = []
        for index, (weight, logits) in enumerate(zip(weights, heads, strict=True)):
            terms = self._head_terms(logits, target)
            head_loss = self._combine(terms)
            parts[f"head_{index}"] = head_loss.detach()
            for name, value in terms.items():
                parts[name] = parts.get(name, 0.0) + weight * value.detach()
            weighted.append(weight * head_loss)
        total = torch.stack(weighted).sum()
        return {"loss": total, **parts}

    def forward(self, outputs: HeadOutputs, target: torch.Tensor) -> torch.Tensor:
        """Total loss.

        Args:
            outputs: Logits ``(N, C, H, W)`` or a tuple/list of such tensors (one per head;
                a head at a lower resolution by an integer factor is upsampled bilinearly).
            target: Binary: ``(N, 1, H, W)`` or ``(N, H, W)`` in {0, 1}. Multi-class: integer
                class indices ``(N, H, W)`` or ``(N, 1, H, W)``.

        Returns:
            Scalar float32 tensor: ``sum_h head_weights[h] * loss(head_h)``.
        """
        return self._compute(outputs, target)["loss"]

    def components(self, outputs: HeadOutputs, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Total loss and its parts, for logging.

        Returns:
            ``{"loss": total (with graph), "dice": ..., "bce" | "ce": ..., "head_0": ..., ...}``
            where ``dice``/``bce``/``ce`` are the head-weighted sums of the unweighted terms and
            ``head_i`` the loss of head ``i``; all but ``loss`` are detached.
        """
        return self._compute(outputs, target)


def build_loss(num_classes: int, **cfg: Any) -> SegmentationLoss:
    """Build the training loss from parameters.

    Args:
        num_classes: 1 for binary, >= 2 for multi-class.
        **cfg: Keyword arguments of :class:`SegmentationLoss` (``dice_weight``, ``bce_weight``,
            ``ce_weight``, ``head_weights``, ``squared_denominator``, ``dice_eps``,
            ``dice_ignore_background``, ``class_weights``).

    Returns:
        The configured loss module.

    Raises:
        ValueError: For an unknown key or an invalid value.
    """
    allowed = [
        name
        for name, param in inspect.signature(SegmentationLoss.__init__).parameters.items()
        if param.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    unknown = sorted(set(cfg) - set(allowed))
    if unknown:
        raise ValueError(f"unknown loss parameter(s) {unknown}; allowed: {allowed}")
    loss = SegmentationLoss(num_classes, **cfg)
    logger.debug("Built loss %r", loss)
    return loss
