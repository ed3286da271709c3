"""U-Net baseline (Ronneberger et al., 2015) with batch norm, returning logits.

Four down / up levels: encoder widths C, 2C, 4C, 8C and a 16C bottleneck; each level is
two CBRs (Conv3x3 -> BatchNorm -> ReLU); each decoder level upsamples x2 (transposed conv,
or bilinear + 1x1 conv), concatenates the encoder skip and applies two CBRs. Any
H, W >= 16 is accepted (reflect-padded to a multiple of 16, outputs cropped back).
"""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn

from sa2_pipeline.models import register_model
from sa2_pipeline.models.base import SegmentationModel
from sa2_pipeline.models.layers import ConvBNReLU

__all__ = ["UNet"]

UPSAMPLING_MODES = ("transpose", "bilinear")


class DoubleConv(nn.Sequential):
    """Two CBRs. Shapes: (N, in, H, W) -> (N, out, H, W)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            ConvBNReLU(in_channels, out_channels), ConvBNReLU(out_channels, out_channels)
        )


class UpBlock(nn.Module):
    """Upsample x2 to ``out`` channels, concatenate the skip, two CBRs.

    Shapes: x (N, in, H/2, W/2), skip (N, out, H, W) -> (N, out, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int, upsampling: str) -> None:
        super().__init__()
        if upsampling == "transpose":
            self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
        else:
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(in_channels, out_channels, kernel_size=1),
            )
        self.convs = DoubleConv(2 * out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.convs(torch.cat([skip, self.up(x)], dim=1))


@register_model("unet")
class UNet(SegmentationModel):
    """Standard 4-level U-Net.

    Args:
        in_channels: Input image channels.
        num_classes: Output channels (logits).
        base_channels: Width ``C`` of the first level (64 in the original paper).
        deep_supervision: Add 1x1 heads on the decoder outputs at 1/2, 1/4 and 1/8
            resolution and return ``(main, aux_1/2, aux_1/4, aux_1/8)`` in training mode
            (the same contract as SA2Net). With False (default) there are no auxiliary
            heads and the model always returns one tensor.
        upsampling: ``"transpose"`` (ConvTranspose2d 2x2, stride 2) or ``"bilinear"``
            (bilinear x2 followed by a 1x1 conv halving the channels).

    Forward:
        x: (N, in_channels, H, W), H, W >= 16. Returns (N, num_classes, H, W) logits, or
        a tuple of four such tensors in training mode with deep supervision.
    """

    #: Four 2x poolings; inputs are padded to a multiple of 16.
    size_divisor = 16

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1,
        base_channels: int = 64,
        deep_supervision: bool = False,
        upsampling: str = "transpose",
    ) -> None:
        super().__init__(
            in_channels=in_channels, num_classes=num_classes, base_channels=base_channels,
            deep_supervision=deep_supervision, upsampling=upsampling,
        )
        if upsampling not in UPSAMPLING_MODES:
            raise ValueError(
                f"UNet: upsampling must be one of {', '.join(UPSAMPLING_MODES)}; got {upsampling!r}"
            )
        widths = [base_channels * 2**i for i in range(5)]  # C, 2C, 4C, 8C, 16C
        self.encoder = nn.ModuleList(
            [DoubleConv(in_channels, widths[0])] + [DoubleConv(a, b) for a, b in pairwise(widths)]
        )
        self.pool = nn.MaxPool2d(2)
        # decoder[i] produces the level-i features (widths[i] channels, 1/2**i resolution)
        self.decoder = nn.ModuleList(
            UpBlock(widths[i + 1], widths[i], upsampling) for i in range(4)
        )
        self.build_heads(widths[0], widths[1:4])  # aux heads at 1/2, 1/4, 1/8

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Decoder outputs of the padded input: [full, 1/2, 1/4, 1/8] resolution."""
        skips = []
        for i, stage in enumerate(self.encoder):
            x = stage(x if i == 0 else self.pool(x))
            skips.append(x)
        decoded = []
        x = skips.pop()
        for block in reversed(self.decoder):
            x = block(x, skips.pop())
            decoded.append(x)
        return decoded[::-1]
