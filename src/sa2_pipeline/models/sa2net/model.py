"""SA2-Net: scale-aware attention network for microscopic image segmentation.

Built from ``docs/network.md`` (BMVC 2023, arXiv 2309.16661, checked against the authors'
release). Reads top to bottom: encoder, SA2 module, decoder, the model.

Shapes below are for a 224 x 224 input and base width ``C`` (64 in the paper); the model
accepts any H, W >= 16 by reflect-padding to a multiple of 16 and cropping the outputs.
"""

from __future__ import annotations

from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

from sa2_pipeline.models import register_model
from sa2_pipeline.models.base import SegmentationModel
from sa2_pipeline.models.layers import Conv2d, ConvBNReLU, DepthwiseConv2d, resize_bilinear
from sa2_pipeline.models.sa2net.blocks import AdaptiveUpAttention, ConvMlpBlock, MixedScaleFFN

__all__ = ["SA2Module", "SA2Net", "SA2NetDecoder", "SA2NetEncoder"]


# --------------------------------------------------------------------------------------
# Encoder
# --------------------------------------------------------------------------------------
class EncoderStage(nn.Module):
    """Optional MaxPool2 followed by ``num_convs`` CBRs.

    Shapes: (N, in, H, W) -> (N, out, H/2, W/2) with ``downsample``, else (N, out, H, W).
    """

    def __init__(
        self, in_channels: int, out_channels: int, num_convs: int, downsample: bool
    ) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(2) if downsample else nn.Identity()
        widths = [in_channels] + [out_channels] * num_convs
        self.convs = nn.Sequential(*(ConvBNReLU(a, b) for a, b in pairwise(widths)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(self.pool(x))


class SA2NetEncoder(nn.Module):
    """Plain U-Net encoder: x1 = CBR(in->C) (one CBR), then four MaxPool2 + 2 x CBR stages.

    Shapes: (N, in, 224, 224) -> [x1 (C, 224), x2 (2C, 112), x3 (4C, 56), x4 (8C, 28),
    x5 (8C, 14)] (channels, side).
    """

    def __init__(self, in_channels: int, base_channels: int) -> None:
        super().__init__()
        c = base_channels
        self.out_channels = (c, 2 * c, 4 * c, 8 * c, 8 * c)
        self.stages = nn.ModuleList(
            [EncoderStage(in_channels, c, num_convs=1, downsample=False)]
            + [
                EncoderStage(a, b, num_convs=2, downsample=True)
                for a, b in pairwise(self.out_channels)
            ]
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


# --------------------------------------------------------------------------------------
# SA2 module (the release's "bottleneck")
# --------------------------------------------------------------------------------------
class SA2Module(nn.Module):
    """Scale-aware attention over the first four encoder scales; produces the skips S1..S4.

    Per scale i (0-based list index = scale - 1): side conv to C (none for x1), resize to
    the reference scale (x3's), MSFN -> s_i. Then ``f = GELU(Conv3x3(4C->C+4)(BN(cat s)))``,
    split into a query ``q`` (C channels, refined by GELU(DW5x5)) and four gates ``g``;
    ``t_i = s_i * g_i * q`` is resized back, added to e_i, passed through a conv-MLP block
    and a Conv3x3 to the skip width.

    Shapes: x1 (N, C, 224), x2 (N, 2C, 112), x3 (N, 4C, 56), x4 (N, 8C, 28) ->
    S1 (N, C, 224), S2 (N, 2C, 112), S3 (N, 4C, 56), S4 (N, 8C, 28).
    """

    num_scales = 4
    reference_scale = 2  # x3: the other scales are resized to its size

    def __init__(self, encoder_channels: tuple[int, ...], channels: int) -> None:
        super().__init__()
        c, k = channels, self.num_scales
        self.channels = c
        # x1 already has C channels; x2..x4 get the release's "side" Conv3x3 to C.
        self.side_convs = nn.ModuleList(
            [nn.Identity()]
            + [Conv2d(ch, c, kernel_size=3, padding=1) for ch in encoder_channels[1:k]]
        )
        self.msfns = nn.ModuleList(MixedScaleFFN(c) for _ in range(k))
        self.fuse_norm = nn.BatchNorm2d(k * c)
        self.fuse_conv = Conv2d(k * c, c + k, kernel_size=3, padding=1)
        self.query_conv = DepthwiseConv2d(c, kernel_size=5)
        self.mlps = nn.ModuleList(ConvMlpBlock(c) for _ in range(k))
        self.out_convs = nn.ModuleList(
            Conv2d(c, ch, kernel_size=3, padding=1) for ch in encoder_channels[:k]
        )

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """Map encoder features [x1, x2, x3, x4] to skips [S1, S2, S3, S4]."""
        e = [side(x) for side, x in zip(self.side_convs, features, strict=True)]
        ref_size = e[self.reference_scale].shape[-2:]
        s = [msfn(resize_bilinear(e_i, ref_size)) for msfn, e_i in zip(self.msfns, e, strict=True)]

        f = F.gelu(self.fuse_conv(self.fuse_norm(torch.cat(s, dim=1))))
        q, g = f.split([self.channels, self.num_scales], dim=1)
        q = F.gelu(self.query_conv(q))  # gates g are used as they are (no sigmoid)

        skips = []
        for i, (mlp, out_conv) in enumerate(zip(self.mlps, self.out_convs, strict=True)):
            t = s[i] * (g[:, i : i + 1] * q)
            u = resize_bilinear(t, e[i].shape[-2:]) + e[i]
            skips.append(out_conv(mlp(u)))
        return skips


# --------------------------------------------------------------------------------------
# Decoder
# --------------------------------------------------------------------------------------
class SA2NetDecoder(nn.Module):
    """Conv3x3 on x5, then four AuA blocks (up4 -> up1) gated by the skips S4..S1.

    ``blocks[i]`` is the release's ``up{i+1}``. Shapes: x5 (N, 8C, 14) and skips
    S1..S4 -> [d1 (N, C, 224), d2 (N, C, 112), d3 (N, 2C, 56), d4 (N, 4C, 28)].
    """

    def __init__(self, base_channels: int) -> None:
        super().__init__()
        c = base_channels
        self.input_conv = Conv2d(8 * c, 8 * c, kernel_size=3, padding=1)
        # (skip/deep width F, output width) of up1..up4
        widths = [(c, c), (2 * c, c), (4 * c, 2 * c), (8 * c, 4 * c)]
        self.blocks = nn.ModuleList(AdaptiveUpAttention(f, out) for f, out in widths)
        self.out_channels = tuple(out for _, out in widths)

    def forward(self, x5: torch.Tensor, skips: list[torch.Tensor]) -> list[torch.Tensor]:
        """Return decoder features [d1, d2, d3, d4] (shallowest first)."""
        d = self.input_conv(x5)
        outputs = []
        for block, skip in zip(reversed(self.blocks), reversed(skips), strict=True):
            d = block(d, skip)
            outputs.append(d)
        return outputs[::-1]


# --------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------
@register_model("sa2net")
class SA2Net(SegmentationModel):
    """SA2-Net returning logits.

    Args:
        in_channels: Input image channels.
        num_classes: Output channels (logits; apply sigmoid / softmax outside).
        base_channels: Width ``C`` of the first stage (64 in the paper).
        deep_supervision: Build the three auxiliary heads (on d2, d3, d4) and return them
            in training mode. With False they are not allocated.

    Forward:
        x: (N, in_channels, H, W) with H, W >= 16 (any size; reflect-padded to a multiple
            of 16 internally, outputs cropped back).

        Returns (N, num_classes, H, W) main logits, or in training mode with deep
        supervision the tuple ``(main, aux_d2, aux_d3, aux_d4)``, all (N, num_classes, H, W).

    Performance: run it channels-last on CPU (``model.to(memory_format=torch.channels_last)``
    and channels-last inputs): every block keeps that layout, and oneDNN's convolutions are
    much faster on it (a training step took ~1.4x less CPU time than in NCHW). Several
    steps are computed in a cheaper but mathematically equivalent order (see the comments
    in ``blocks`` and :mod:`sa2_pipeline.models.base`); ``tests/models/test_sa2net.py``
    checks the result against a literal implementation of docs/network.md.
    """

    #: Total downsampling of the encoder; inputs are padded to a multiple of it.
    size_divisor = 16

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1,
        base_channels: int = 64,
        deep_supervision: bool = True,
    ) -> None:
        super().__init__(
            in_channels=in_channels, num_classes=num_classes, base_channels=base_channels,
            deep_supervision=deep_supervision,
        )
        self.encoder = SA2NetEncoder(in_channels, base_channels)
        self.sa2 = SA2Module(self.encoder.out_channels, base_channels)
        self.decoder = SA2NetDecoder(base_channels)
        d1, *deeper = self.decoder.out_channels
        self.build_heads(d1, deeper)  # aux heads on d2, d3, d4

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Decoder features [d1, d2, d3, d4] of the padded input."""
        features = self.encoder(x)
        skips = self.sa2(features[:4])
        return self.decoder(features[4], skips)
