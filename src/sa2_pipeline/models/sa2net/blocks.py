"""Building blocks of SA2-Net (and the shared layers the U-Net baseline reuses).

Every block takes and returns NCHW tensors and keeps the input's memory format, so a model
moved to ``torch.channels_last`` stays channels-last end to end (faster on CPU with oneDNN
and on GPU with cuDNN). Shapes in docstrings use ``N`` batch, ``C`` channels, ``H x W`` size.

Contents, top to bottom:
    input helpers     ``check_input``, ``pad_to_multiple``, ``crop_to``
    generic layers    ``pointwise_conv``, ``ConvBNReLU`` (CBR), ``LayerNorm2d``
    SA2 module parts  ``MixedScaleFFN`` (MSFN), ``ConvMlpBlock``
    decoder block     ``upsample2x_dwconv``, ``AdaptiveUpAttention`` (AuA)
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
    "pointwise_conv",
    "upsample2x_dwconv",
]


# --------------------------------------------------------------------------------------
# Input helpers (shared by every model in ``sa2_pipeline.models``)
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
def _phase_matrix(kernel_size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(2, T, k) 0/1 matrix: tap ``u`` of output phase ``a`` reads low-res offset row ``t``.

    With a k x k kernel (padding k//2) on a 2x nearest-upsampled map, output row
    ``2i + a`` reads upsampled row ``2i + a + u - k//2``, i.e. low-res row
    ``i + floor((a + u - k//2) / 2)``: offsets ``-T//2 .. T//2`` for both phases.
    """
    pad = kernel_size // 2
    lowest = -((pad + 1) // 2)
    taps = (kernel_size - pad) // 2 - lowest + 1
    u = torch.arange(kernel_size, device=device)
    phase = torch.arange(2, device=device)[:, None]
    rows = torch.div(phase + u - pad, 2, rounding_mode="floor") - lowest  # (2, k)
    return F.one_hot(rows, taps).transpose(1, 2).to(dtype)


def upsample2x_dwconv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``DWConv_kxk(nearest_x2(x))`` (padding k//2), computed at ``x``'s resolution.

    Each output pixel (2i+a, 2j+b) only sees low-res pixels within +-T//2 (T = 7 for
    k = 11). Summing the k x k taps that land on the same low-res pixel gives one T x T
    kernel per output phase (a, b); a grouped conv (1 -> 4 channels per group) computes
    the four phases and ``pixel_shuffle`` interleaves them. Same function up to float
    round-off, 49 instead of 121 MACs per output pixel, no upsampled copy of the input,
    and oneDNN's slow depthwise weight-gradient runs on 4x fewer pixels: forward +
    backward 1.3-1.8x faster than upsample + 11x11 conv at the four decoder levels
    (channels-last, 2 threads).

    Args:
        x: (N, C, h, w) low-resolution input.
        weight: (C, 1, k, k) depthwise kernel (k odd), as applied at full resolution.
        bias: (C,).

    Returns:
        (N, C, 2h, 2w).
    """
    channels, _, kernel_size, _ = weight.shape
    phases = _phase_matrix(kernel_size, weight.device, weight.dtype)
    taps = phases.shape[1]
    # (C, a, b, T, T) -> (4C, 1, T, T), channel order c*4 + a*2 + b as pixel_shuffle expects
    phase_weight = torch.einsum("atu,cuv,bsv->cabts", phases, weight[:, 0], phases)
    phase_weight = phase_weight.reshape(4 * channels, 1, taps, taps)
    out = F.conv2d(x, phase_weight, bias.repeat_interleave(4), padding=taps // 2, groups=channels)
    return F.pixel_shuffle(out, 2)


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
        self.channels = channels
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
        # upsampling: run them at the low resolution (4x fewer pixels, identical result);
        # the upsampling itself is folded into the 11x11 depthwise conv.
        g = F.gelu(self.up_pw(self.up_norm(d)))
        g = upsample2x_dwconv(g, self.up_dw.weight, self.up_dw.bias)
        x = self.skip_dw(s)
        # Conv1x1(2F->1)(GELU(cat[g, x])) with the weight split in two: no concatenated
        # copy (forward + backward 1.6-2x faster than cat + conv).
        w_g, w_x = self.psi_conv.weight.view(1, 2, self.channels).unbind(1)
        logit = pointwise_conv(F.gelu(g), w_g, self.psi_conv.bias) + pointwise_conv(F.gelu(x), w_x)
        psi = torch.sigmoid(self.psi_norm(logit))
        y = self.skip_proj(psi * x) + s
        return self.convs(y)
