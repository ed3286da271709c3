"""Building blocks of SA2-Net (and the shared layers the U-Net baseline reuses).

Every block takes and returns NCHW tensors and keeps the input's memory format, so a model
moved to ``torch.channels_last`` stays channels-last end to end (faster on CPU with oneDNN
and on GPU with cuDNN). Shapes in docstrings use ``N`` batch, ``C`` channels, ``H x W`` size.

Contents, top to bottom:
    input helpers     ``check_input``, ``pad_to_multiple``, ``crop_to``
    generic layers    ``ConvBNReLU`` (CBR), ``LayerNorm2d``
    SA2 module parts  ``MixedScaleFFN`` (MSFN), ``ConvMlpBlock``
    decoder block     ``AdaptiveUpAttention`` (AuA)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "AdaptiveUpAttention",
    "ConvBNReLU",
    "ConvMlpBlock",
    "LayerNorm2d",
    "MixedScaleFFN",
    "check_input",
    "crop_to",
    "pad_to_multiple",
]


# --------------------------------------------------------------------------------------
# Input helpers (shared by every model in ``sa2_pipeline.models``)
# --------------------------------------------------------------------------------------
def check_input(x: torch.Tensor, in_channels: int, min_size: int, model: str) -> None:
    """Validate a model input.

    Args:
        x: Input batch, expected (N, in_channels, H, W).
        in_channels: Channel count the model was built for.
        min_size: Smallest allowed H and W (the model's total downsampling factor).
        model: Model name used in error messages.

    Raises:
        ValueError: If ``x`` is not 4-D, has the wrong channel count, or H or W is smaller
            than ``min_size``.
    """
    if x.ndim != 4:
        raise ValueError(
            f"{model} expects a 4-D input (N, C, H, W); got a {x.ndim}-D tensor of shape "
            f"{tuple(x.shape)}"
        )
    if x.shape[1] != in_channels:
        raise ValueError(
            f"{model} was built for in_channels={in_channels}, but the input has "
            f"{x.shape[1]} channels (shape {tuple(x.shape)})"
        )
    height, width = x.shape[-2:]
    if height < min_size or width < min_size:
        raise ValueError(
            f"{model} needs input height and width >= {min_size} (inputs are reflect-padded "
            f"to a multiple of {min_size}); got H={height}, W={width}"
        )


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Reflect-pad H and W up to the next multiple of ``multiple``, split evenly.

    Args:
        x: (N, C, H, W) with H, W >= ``multiple`` (so reflect padding, which needs
            pad < size, is always possible).
        multiple: Required divisor of the padded size.

    Returns:
        The padded tensor (N, C, H', W') (``x`` itself when no padding is needed) and
        ``(top, left)``, the offsets at which the original image sits inside it.
    """
    height, width = x.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    if pad_h == 0 and pad_w == 0:
        return x, (0, 0)
    top, left = pad_h // 2, pad_w // 2
    padded = F.pad(x, (left, pad_w - left, top, pad_h - top), mode="reflect")
    # F.pad's output is contiguous whatever the input layout; keep the caller's format.
    if x.is_contiguous(memory_format=torch.channels_last):
        padded = padded.contiguous(memory_format=torch.channels_last)
    return padded, (top, left)


def crop_to(x: torch.Tensor, offset: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """Crop (N, C, H', W') back to (N, C, *size) starting at ``offset`` (a view, no copy)."""
    top, left = offset
    if x.shape[-2:] == size:
        return x
    return x[..., top : top + size[0], left : left + size[1]]


# --------------------------------------------------------------------------------------
# Generic layers
# --------------------------------------------------------------------------------------
class ConvBNReLU(nn.Module):
    """CBR: Conv3x3 (padding 1, bias) -> BatchNorm2d -> ReLU.

    Shapes: (N, in_channels, H, W) -> (N, out_channels, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In-place is safe: BatchNorm's backward needs its input, not its output.
        return F.relu(self.norm(self.conv(x)), inplace=True)


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of an NCHW tensor (per pixel), eps 1e-6.

    Implemented as ``F.layer_norm`` on an NHWC view: for a channels-last input that view
    is free and the fused kernel runs on it directly; this was faster on CPU than a
    mean/var-over-dim-1 formulation for both layouts, forward and backward (measured with
    torch 2.13, 2 threads). The output keeps the input's memory format.

    Shapes: (N, C, H, W) -> (N, C, H, W).
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels_last = x.is_contiguous(memory_format=torch.channels_last)
        y = F.layer_norm(
            x.permute(0, 2, 3, 1), (self.num_channels,), self.weight, self.bias, self.eps
        ).permute(0, 3, 1, 2)
        # ``y`` is channels-last by construction; restore NCHW for an NCHW input so that
        # the layout stays uniform through the network.
        return y if channels_last else y.contiguous()

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}"


# --------------------------------------------------------------------------------------
# SA2 module parts
# --------------------------------------------------------------------------------------
class MixedScaleFFN(nn.Module):
    """Mixed-scale feed-forward block (MSFN) of one SA2 scale.

    ``h = Conv1x1(C->4C)(x)``; ``a = ReLU(DW3x3(h))``, ``b = ReLU(DW5x5(h))``;
    ``out = Conv1x1(4C->C)(cat[a1 * sigmoid(b1), a2 * sigmoid(b2)])`` where ``[a1, a2]`` and
    ``[b1, b2]`` are channel halves.

    Shapes: (N, C, H, W) -> (N, C, H, W).
    """

    def __init__(self, channels: int, expansion: int = 4) -> None:
        super().__init__()
        hidden = channels * expansion
        self.project_in = nn.Conv2d(channels, hidden, kernel_size=1)
        self.dwconv3 = nn.Conv2d(hidden, hidden, kernel_size=3, padding=1, groups=hidden)
        self.dwconv5 = nn.Conv2d(hidden, hidden, kernel_size=5, padding=2, groups=hidden)
        self.project_out = nn.Conv2d(hidden, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.project_in(x)
        a = F.relu(self.dwconv3(h), inplace=True)
        b = F.relu(self.dwconv5(h), inplace=True)
        # cat[a1*sig(b1), a2*sig(b2)] over matching channel halves is a*sig(b) elementwise:
        # no split, no concatenation copy.
        return self.project_out(a * torch.sigmoid(b))


class ConvMlpBlock(nn.Module):
    """Conv-MLP block applied per scale at the end of the SA2 module.

    ``z = LN(u)``; ``z = z + GELU(DW3x3(z))``; ``z = Conv1x1(4C->C)(GELU(Conv1x1(C->4C)(z)))``;
    ``out = z + u`` (the residual is the un-normalised input).

    Shapes: (N, C, H, W) -> (N, C, H, W).
    """

    def __init__(self, channels: int, expansion: int = 4) -> None:
        super().__init__()
        hidden = channels * expansion
        self.norm = LayerNorm2d(channels)
        self.dwconv = nn.Conv2d(channels, channels, kernel_size=3, padding=1, groups=channels)
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1)
        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        z = self.norm(u)
        z = z + F.gelu(self.dwconv(z))
        z = self.fc2(F.gelu(self.fc1(z)))
        return z + u


# --------------------------------------------------------------------------------------
# Decoder block
# --------------------------------------------------------------------------------------
class AdaptiveUpAttention(nn.Module):
    """Adaptive up-attention (AuA) decoder block.

    With ``d`` the deeper decoder feature and ``s`` the skip (both ``F`` channels):
    ``g = DW11x11(GELU(Conv1x1(LN(nearest_x2(d)))))``; ``x = DW5x5(s)``;
    ``psi = sigmoid(BN1(Conv1x1(2F->1)(GELU(cat[g, x]))))``;
    ``y = Conv3x3(psi * x) + s``; ``out = CBR(out->out)(CBR(F->out)(y))``.
    The deeper path reaches the output only through the one-channel map ``psi``.

    Shapes: d (N, F, H/2, W/2), s (N, F, H, W) -> (N, out_channels, H, W).
    """

    def __init__(self, channels: int, out_channels: int) -> None:
        super().__init__()
        self.up_norm = LayerNorm2d(channels)
        self.up_pw = nn.Conv2d(channels, channels, kernel_size=1)
        self.up_dw = nn.Conv2d(channels, channels, kernel_size=11, padding=5, groups=channels)
        self.skip_dw = nn.Conv2d(channels, channels, kernel_size=5, padding=2, groups=channels)
        self.psi_conv = nn.Conv2d(2 * channels, 1, kernel_size=1)
        self.psi_norm = nn.BatchNorm2d(1)
        self.skip_proj = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.convs = nn.Sequential(
            ConvBNReLU(channels, out_channels), ConvBNReLU(out_channels, out_channels)
        )

    def forward(self, d: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        # LN, the 1x1 conv and GELU act on each pixel alone, so they commute with nearest
        # upsampling: run them at the low resolution (4x fewer pixels, bit-identical result)
        # and upsample just before the 11x11 depthwise conv, the first op that mixes pixels.
        g = F.gelu(self.up_pw(self.up_norm(d)))
        g = self.up_dw(F.interpolate(g, scale_factor=2.0, mode="nearest"))
        x = self.skip_dw(s)
        psi = torch.sigmoid(self.psi_norm(self.psi_conv(F.gelu(torch.cat([g, x], dim=1)))))
        y = self.skip_proj(psi * x) + s
        return self.convs(y)
