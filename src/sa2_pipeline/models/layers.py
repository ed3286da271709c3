"""Layers shared by every model in :mod:`sa2_pipeline.models`.

Every layer takes and returns NCHW tensors and keeps the input's memory format, so a model
moved to ``torch.channels_last`` stays channels-last end to end (faster on CPU with oneDNN
and on GPU with cuDNN). Shapes in docstrings use ``N`` batch, ``C`` channels, ``H x W`` size.

Contents, top to bottom:
    input helpers     ``check_positive_ints``, ``check_input``, ``pad_to_multiple``,
                      ``crop_to``, ``resize_bilinear``
    generic layers    ``pointwise_conv``, ``Conv2d``, ``DepthwiseConv2d``,
                      ``depthwise_conv2d``, ``ConvBNReLU`` (CBR), ``LayerNorm2d``

The kernel choices the layers follow (weight-gradient layout, depthwise backward) are
process-wide settings of :mod:`sa2_pipeline.runtime.kernels`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sa2_pipeline.runtime import kernels

__all__ = [
    "Conv2d",
    "ConvBNReLU",
    "DepthwiseConv2d",
    "LayerNorm2d",
    "check_input",
    "check_positive_ints",
    "crop_to",
    "depthwise_conv2d",
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


# --------------------------------------------------------------------------------------
# Dense convolution with a selectable weight-gradient layout
# --------------------------------------------------------------------------------------
# The choice is process-wide: sa2_pipeline.runtime.kernels.


class _NCHWWeightGradConv(torch.autograd.Function):
    """``F.conv2d`` whose backward computes the weight/bias gradient on NCHW copies."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation):  # noqa: ANN001, PLR0913
        ctx.save_for_backward(x, weight)
        ctx.conv = (stride, padding, dilation, bias is not None)
        return F.conv2d(x, weight, bias, stride, padding, dilation)

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001
        x, weight = ctx.saved_tensors
        stride, padding, dilation, has_bias = ctx.conv
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        bias_sizes = [weight.shape[0]] if has_bias else None
        args = (bias_sizes, stride, padding, dilation, False, [0, 0], 1)
        grad_x = grad_w = grad_b = None
        if need_x:
            grad_x = torch.ops.aten.convolution_backward(
                grad, x, weight, *args, [True, False, False])[0]
        if need_w or (need_b and has_bias):
            _, grad_w, grad_b = torch.ops.aten.convolution_backward(
                grad.contiguous(), x.contiguous(), weight.contiguous(), *args,
                [False, need_w, need_b and has_bias])
            if grad_w is not None and weight.is_contiguous(memory_format=torch.channels_last):
                grad_w = grad_w.contiguous(memory_format=torch.channels_last)
        return grad_x, grad_w, grad_b, None, None, None


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters, same state-dict keys, same function) whose weight
    gradient follows :func:`~sa2_pipeline.runtime.kernels.set_weight_grad_layout` for
    dense, zero-padded, channels-last float32 convolutions; everything else runs
    ``nn.Conv2d`` unchanged."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            kernels.weight_grad_layout() == "nchw"
            and self.groups == 1
            and self.padding_mode == "zeros"
            and not isinstance(self.padding, str)
            and torch.is_grad_enabled()
            and self.weight.requires_grad
            and x.dtype == torch.float32
            and x.device.type == "cpu"
            and not torch.is_autocast_enabled("cpu")
            and x.is_contiguous(memory_format=torch.channels_last)
            and not torch.compiler.is_compiling()
        ):
            return _NCHWWeightGradConv.apply(x, self.weight, self.bias, list(self.stride),
                                             list(self.padding), list(self.dilation))
        return super().forward(x)


# --------------------------------------------------------------------------------------
# Depthwise convolution with a fast CPU backward
# --------------------------------------------------------------------------------------
class _DepthwiseConv(torch.autograd.Function):
    """Stride-1, "same"-padded depthwise convolution (one output channel per input
    channel) whose CPU backward avoids oneDNN's depthwise weight-gradient kernel, which
    runs 20-40x slower than the forward (docs/measurements.md).

    * weight gradient: ``dW[c] = sum_n corr(x_pad[n, c], g[n, c])`` is itself a depthwise
      *forward* convolution, of the padded input (one group per image and channel) with
      the output gradient as the kernel, then summed over the batch;
    * input gradient: the forward convolution of the output gradient with the flipped
      kernel;
    * bias gradient: the output gradient summed over batch and space.

    The same sums in another order: equal to oneDNN's gradients up to rounding. Under
    CPU autocast it computes in the autocast dtype, as ``F.conv2d`` would.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, padding):  # noqa: ANN001
        dtype = (torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu")
                 else x.dtype)
        xc, wc = x.to(dtype), weight.to(dtype)
        bc = None if bias is None else bias.to(dtype)
        ctx.save_for_backward(xc, wc)
        ctx.meta = (padding, bias is not None, x.dtype, weight.dtype)
        with torch.autocast("cpu", enabled=False):
            return F.conv2d(xc, wc, bc, padding=padding, groups=x.shape[1])

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001
        x, weight = ctx.saved_tensors
        padding, has_bias, x_dtype, w_dtype = ctx.meta
        grad = grad.to(x.dtype)
        acc = torch.promote_types(x.dtype, torch.float32)  # sums of bf16 terms in fp32
        n, channels, height, width = x.shape
        grad_x = grad_w = grad_b = None
        with torch.autocast("cpu", enabled=False):
            if ctx.needs_input_grad[0]:
                grad_x = F.conv2d(grad, weight.flip(-2, -1), padding=padding,
                                  groups=channels).to(x_dtype)
            if ctx.needs_input_grad[1]:
                x_pad = F.pad(x, (padding,) * 4).reshape(1, n * channels, height + 2 * padding,
                                                         width + 2 * padding)
                kernels = grad.reshape(n * channels, 1, height, width)
                per_image = F.conv2d(x_pad, kernels, groups=n * channels)
                grad_w = per_image.reshape(n, channels, 1, *weight.shape[-2:]).to(acc).sum(0)
                grad_w = grad_w.to(w_dtype)
            if has_bias and ctx.needs_input_grad[2]:
                grad_b = grad.to(acc).sum((0, 2, 3)).to(w_dtype)
        return grad_x, grad_w, grad_b, None


def depthwise_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                     padding: int) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=padding, groups=C)`` for a square odd kernel
    ``(C*m, 1, k, k)``, stride 1 and ``padding`` = k // 2. A CPU training step with one
    output channel per group uses :class:`_DepthwiseConv`'s backward; anything else
    (CUDA, no gradient, compile, m > 1, where oneDNN's grouped kernels are faster than
    this backward's: docs/measurements.md) runs ``F.conv2d``.

    Raises:
        ValueError: A kernel that is not square and odd, or ``padding`` != k // 2.
    """
    k_h, k_w = weight.shape[-2:]
    if k_h != k_w or k_h % 2 == 0 or padding != k_h // 2:
        raise ValueError(f"depthwise_conv2d needs a square odd kernel and padding k // 2, "
                         f"got kernel {k_h}x{k_w} and padding {padding}")
    if (
        kernels.depthwise_backward() == "conv"
        and x.device.type == "cpu"
        and weight.shape[0] == x.shape[1]
        and torch.is_grad_enabled()
        and (weight.requires_grad or x.requires_grad)
        and not torch.compiler.is_compiling()
    ):
        return _DepthwiseConv.apply(x, weight, bias, padding)
    return F.conv2d(x, weight, bias, padding=padding, groups=x.shape[1])


class DepthwiseConv2d(nn.Conv2d):
    """A depthwise ``nn.Conv2d`` (``channels`` in and out, ``groups=channels``, stride 1,
    padding ``kernel_size // 2``: same parameters and state-dict keys) whose CPU backward
    is :func:`depthwise_conv2d`'s."""

    def __init__(self, channels: int, kernel_size: int) -> None:
        if kernel_size % 2 == 0:
            raise ValueError(f"DepthwiseConv2d needs an odd kernel_size, got {kernel_size}")
        super().__init__(channels, channels, kernel_size, padding=kernel_size // 2,
                         groups=channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return depthwise_conv2d(x, self.weight, self.bias, self.kernel_size[0] // 2)


class ConvBNReLU(nn.Module):
    """CBR: Conv3x3 (padding 1, bias) -> BatchNorm2d -> ReLU.

    Shapes: (N, in_channels, H, W) -> (N, out_channels, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
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
