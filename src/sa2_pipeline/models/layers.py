"""Layers shared by every model in :mod:`sa2_pipeline.models`.

Every layer takes and returns NCHW tensors and keeps the input's memory format, so a model
moved to ``torch.channels_last`` stays channels-last end to end (faster on CPU with oneDNN
and on GPU with cuDNN). Shapes in docstrings use ``N`` batch, ``C`` channels, ``H x W`` size.

Contents, top to bottom:
    input helpers     ``check_positive_ints``, ``check_input``, ``pad_to_multiple``,
                      ``crop_to``, ``resize_bilinear``
    generic layers    ``pointwise_conv``, ``ConvBNReLU`` (CBR), ``LayerNorm2d``
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ConvBNReLU",
    "LayerNorm2d",
    "check_input",
    "check_positive_ints",
    "crop_to",
    "pad_to_multiple",
    "pointwise_conv",
    "resize_bilinear",
]


# --------------------------------------------------------------------------------------
# Input helpers
# --------------------------------------------------------------------------------------
def check_positive_ints(owner: str, **values: object) -> None:
    """Constructor check shared by the models: every value a positive int (not a bool)."""
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{owner}: {name} must be a positive int, got {value!r}")


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

def resize_bilinear(x: torch.Tensor, size: torch.Size | tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (align_corners=False); a no-op when the size already matches."""
    if x.shape[-2:] == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


# --------------------------------------------------------------------------------------
# Generic layers
# --------------------------------------------------------------------------------------
def pointwise_conv(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """1x1 convolution to few output channels (heads, attention maps).

    Same function as ``F.conv2d(x, weight, bias)``. For a channels-last input the
    (N*H*W, C) view is free and ``F.linear`` on it was ~15-20% faster than the
    convolution (forward + backward, 64 or 128 -> 1 channel at 224 x 224, 2 threads);
    for wide outputs the two were equal, so the blocks keep ``nn.Conv2d`` there. NCHW
    input goes through ``F.conv2d`` (a matmul would hand channels-last gradients back
    into an NCHW network).

    Args:
        x: (N, C, H, W).
        weight: (O, C, 1, 1) or (O, C).
        bias: (O,) or None.

    Returns:
        (N, O, H, W), same memory format as ``x``.
    """
    if x.is_contiguous(memory_format=torch.channels_last):
        weight = weight.reshape(weight.shape[0], x.shape[1])
        return F.linear(x.permute(0, 2, 3, 1), weight, bias).permute(0, 3, 1, 2)
    return F.conv2d(x, weight.reshape(weight.shape[0], x.shape[1], 1, 1), bias)


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

    Channels-last input: ``F.layer_norm`` on the NHWC view, which is free; forward +
    backward took 17 ms against 128 ms for a mean/var-over-dim-1 formulation
    ((4, 64, 112, 112), 1 thread). NCHW input: the mean/var formulation, whose output and
    gradients stay NCHW; the NHWC route would hand channels-last gradients to the
    neighbouring NCHW ops, which then run on mixed layouts (several times slower).

    Shapes: (N, C, H, W) -> (N, C, H, W), same memory format as the input.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_contiguous(memory_format=torch.channels_last):
            nhwc = x.permute(0, 2, 3, 1)
            y = F.layer_norm(nhwc, (self.num_channels,), self.weight, self.bias, self.eps)
            return y.permute(0, 3, 1, 2)
        # Statistics in float32 also under bf16/fp16 autocast (F.layer_norm does the same).
        xf = x.float()
        mean = xf.mean(1, keepdim=True)
        centred = xf - mean
        inv_std = torch.rsqrt(centred.square().mean(1, keepdim=True) + self.eps)
        y = torch.addcmul(self.bias[:, None, None], self.weight[:, None, None], centred * inv_std)
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}"
