"""DepthwiseConv2d / depthwise_conv2d: the same function and gradients as ``F.conv2d``
with ``groups=C``, through a CPU backward that avoids oneDNN's slow depthwise weight
gradient."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sa2_pipeline.models import layers
from sa2_pipeline.models.layers import DepthwiseConv2d, depthwise_conv2d


def _grads(fn, x, weight, bias, autocast=False):
    x, weight, bias = (t.clone().requires_grad_() for t in (x, weight, bias))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = fn(x, weight, bias)
    out.backward(torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape))
    return out, x.grad, weight.grad, bias.grad


@pytest.mark.parametrize("kernel", [3, 5, 11])
@pytest.mark.parametrize("channels_last", [True, False])
def test_value_and_every_gradient_match_the_grouped_conv_in_float64(kernel, channels_last):
    torch.manual_seed(0)
    x = torch.randn(3, 6, 13, 17, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(6, 1, kernel, kernel, dtype=torch.float64)
    bias = torch.randn(6, dtype=torch.float64)
    pad = kernel // 2
    ref = _grads(lambda a, w, b: F.conv2d(a, w, b, padding=pad, groups=6), x, weight, bias)
    ours = _grads(lambda a, w, b: depthwise_conv2d(a, w, b, pad), x, weight, bias)
    for expected, got in zip(ref, ours, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    assert ours[1].dtype == torch.float64 and ours[2].dtype == torch.float64


def test_under_bf16_autocast_it_computes_in_bf16_and_returns_float32_gradients():
    torch.manual_seed(1)
    x = torch.randn(2, 8, 16, 16).contiguous(memory_format=torch.channels_last)
    weight, bias = torch.randn(8, 1, 5, 5), torch.randn(8)
    ref = _grads(lambda a, w, b: F.conv2d(a, w, b, padding=2, groups=8), x, weight, bias,
                 autocast=True)
    ours = _grads(lambda a, w, b: depthwise_conv2d(a, w, b, 2), x, weight, bias,
                  autocast=True)
    assert ours[0].dtype == ref[0].dtype == torch.bfloat16
    assert ours[2].dtype == torch.float32 and ours[1].dtype == torch.float32
    torch.testing.assert_close(ours[0], ref[0])
    torch.testing.assert_close(ours[1], ref[1])  # the input gradient: the same bf16 conv
    # the weight gradient sums bf16 products in another order: bf16 rounding apart
    scale = ref[2].abs().max()
    assert (ours[2] - ref[2]).abs().max() <= 0.02 * scale
    torch.testing.assert_close(ours[3], ref[3], rtol=1e-2, atol=1e-2 * ref[3].abs().max())


def test_the_module_keeps_conv2d_parameters_and_state_dict_keys():
    torch.manual_seed(2)
    ours = DepthwiseConv2d(4, kernel_size=5)
    plain = torch.nn.Conv2d(4, 4, 5, padding=2, groups=4)
    plain.load_state_dict(ours.state_dict())
    assert list(ours.state_dict()) == ["weight", "bias"]
    x = torch.randn(1, 4, 9, 9, requires_grad=True)
    torch.testing.assert_close(ours(x), plain(x))
    assert "Depthwise" in type(ours(x).grad_fn).__name__
    # without a gradient to compute, the plain convolution runs (our Function never does)
    calls = []
    original = layers._DepthwiseConv.apply
    layers._DepthwiseConv.apply = lambda *args: calls.append(args) or original(*args)
    try:
        with torch.no_grad():
            torch.testing.assert_close(ours(x), plain(x))
        ours(x)
    finally:
        del layers._DepthwiseConv.apply
    assert len(calls) == 1


def test_an_even_kernel_is_refused():
    with pytest.raises(ValueError, match="odd kernel_size"):
        DepthwiseConv2d(4, kernel_size=4)


def test_a_channel_multiplier_runs_the_plain_grouped_conv():
    x = torch.randn(1, 3, 8, 8, requires_grad=True)
    weight = torch.randn(12, 1, 3, 3, requires_grad=True)
    out = depthwise_conv2d(x, weight, None, 1)
    assert out.shape == (1, 12, 8, 8) and "Depthwise" not in type(out.grad_fn).__name__
    torch.testing.assert_close(out, F.conv2d(x, weight, padding=1, groups=3))


@pytest.mark.parametrize(("kernel", "padding"), [((3, 5), 1), ((4, 4), 2), ((5, 5), 1)])
def test_a_kernel_or_padding_the_backward_cannot_take_is_refused(kernel, padding):
    x = torch.randn(1, 2, 8, 8, requires_grad=True)
    with pytest.raises(ValueError, match="square odd kernel and padding k // 2"):
        depthwise_conv2d(x, torch.randn(2, 1, *kernel), None, padding)
