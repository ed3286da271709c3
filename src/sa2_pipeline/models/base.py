"""The common shape of every segmentation model here: pad, features, heads, crop back.

A model subclasses :class:`SegmentationModel`, builds its own encoder/decoder, calls
:meth:`SegmentationModel.build_heads` last, and implements ``forward_features``. The base
class owns everything around that: the constructor checks and ``init_kwargs``, the input
check, reflect-padding to a multiple of ``size_divisor``, the 1x1 main head, the optional
deep-supervision heads (applied at low resolution, then upsampled), and the crop back to
the input size.

The heads stay plain ``nn.Conv2d`` attributes named ``head`` and ``aux_heads`` so the
state-dict keys (``head.weight``, ``aux_heads.0.weight``...) are those of the released
checkpoints.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from sa2_pipeline.models.layers import (
    check_input,
    check_positive_ints,
    crop_to,
    pad_to_multiple,
    pointwise_conv,
    resize_bilinear,
)

__all__ = ["SegmentationModel"]


class SegmentationModel(nn.Module):
    """Base class: logits at the input's size from a feature pyramid and 1x1 heads.

    Args:
        in_channels: Input image channels.
        num_classes: Output channels (logits).
        base_channels: Width of the model's first level.
        deep_supervision: Whether the subclass asked for auxiliary heads; in training
            mode the forward pass then returns ``(main, *aux)``.
        **options: Further constructor arguments, recorded in ``init_kwargs`` after the
            four above (in the order given).

    Subclasses set ``size_divisor`` (their total downsampling) and implement
    :meth:`forward_features`.
    """

    #: Inputs are reflect-padded to a multiple of this; also the smallest allowed H, W.
    size_divisor: int = 16

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        base_channels: int,
        deep_supervision: bool,
        **options: Any,
    ) -> None:
        super().__init__()
        check_positive_ints(
            type(self).__name__, in_channels=in_channels, num_classes=num_classes,
            base_channels=base_channels,
        )
        self.init_kwargs = {
            "in_channels": in_channels,
            "num_classes": num_classes,
            "base_channels": base_channels,
            "deep_supervision": bool(deep_supervision),
            **options,
        }
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.deep_supervision = bool(deep_supervision)
        self.head: nn.Conv2d | None = None
        self.aux_heads: nn.ModuleList | None = None

    def build_heads(self, main_channels: int, aux_channels: Sequence[int]) -> None:
        """Create the 1x1 main head and, with deep supervision, one head per aux feature.

        Call it after the encoder and decoder, so parameters are created (and seeded)
        in the same order as before the base class existed.
        """
        self.head = nn.Conv2d(main_channels, self.num_classes, kernel_size=1)
        self.aux_heads = (
            nn.ModuleList(nn.Conv2d(ch, self.num_classes, kernel_size=1) for ch in aux_channels)
            if self.deep_supervision
            else None
        )

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Decoder features of the padded input, full resolution first.

        Args:
            x: (N, in_channels, H, W), H and W multiples of ``size_divisor``.

        Returns:
            ``[main, aux_1, aux_2, ...]``: the feature the main head reads (at H x W),
            then one lower-resolution feature per auxiliary head.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement forward_features")

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """(N, in_channels, H, W), H, W >= ``size_divisor`` -> (N, num_classes, H, W) logits.

        In training mode with deep supervision: ``(main, *aux)``, all at (H, W).
        """
        check_input(x, self.in_channels, self.size_divisor, type(self).__name__)
        size = x.shape[-2:]
        x, offset = pad_to_multiple(x, self.size_divisor)
        main_features, *deeper = self.forward_features(x)

        main = crop_to(
            pointwise_conv(main_features, self.head.weight, self.head.bias), offset, size
        )
        if not (self.training and self.aux_heads is not None):
            return main
        # Both the 1x1 head and the bilinear resize are linear per channel, and bilinear
        # weights sum to 1 (so the bias passes through): applying the head at the low
        # resolution and upsampling the few-class logits is the same function as the
        # other order up to float round-off, and 4-64x cheaper.
        full = x.shape[-2:]
        aux = (
            crop_to(resize_bilinear(pointwise_conv(d, head.weight, head.bias), full), offset, size)
            for head, d in zip(self.aux_heads, deeper, strict=True)
        )
        return (main, *aux)
