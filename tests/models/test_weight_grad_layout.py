"""The NCHW weight-gradient path of ``layers.Conv2d`` computes the same gradients.

It is a kernel choice (docs/measurements.md: 2-4x faster dense-convolution weight
gradients on AVX2-only CPUs), so every output and every gradient must match the native
path up to float summation order, and the state dict must not change.
"""

import pytest
import torch
import torch.nn.functional as F

from sa2_pipeline.models import create_model, layers
from sa2_pipeline.runtime import kernels


@pytest.fixture
def nchw_weight_grads():
    kernels.set_weight_grad_layout("nchw")
    yield
    kernels.set_weight_grad_layout("native")


def _grads(model, x, layout):
    kernels.set_weight_grad_layout(layout)
    model.zero_grad(set_to_none=True)
    xx = x.clone().requires_grad_()
    outputs = model(xx)
    loss = sum((o.float() * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in outputs)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    return [o.detach() for o in outputs], grads, xx.grad.clone()


@pytest.mark.parametrize("name", ["sa2net", "unet"])
def test_both_layouts_give_the_same_outputs_and_gradients(name):
    torch.manual_seed(0)
    model = create_model(name, base_channels=4).to(memory_format=torch.channels_last).train()
    x = torch.rand(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        out_a, grads_a, gx_a = _grads(model, x, "native")
        model.load_state_dict(state)
        out_b, grads_b, gx_b = _grads(model, x, "nchw")
    finally:
        kernels.set_weight_grad_layout("native")
    for a, b in zip(out_a, out_b, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gx_a, gx_b, rtol=1e-4, atol=1e-5)
    assert grads_a.keys() == grads_b.keys()
    # Float32 sums in another order differ by about eps x the size of the terms summed,
    # not of the result: a bias gradient that cancels to 5e-5 can be off by 5e-5 when the
    # model's gradients are ~255 (seen on an AVX-512 EPYC). So the absolute tolerance
    # scales with the largest gradient; a wrong gradient is off by that scale itself.
    scale = max(g.abs().max().item() for g in grads_b.values())
    for key in grads_a:
        torch.testing.assert_close(grads_a[key], grads_b[key], rtol=1e-4,
                                   atol=max(1e-5, 1e-6 * scale), msg=key)


def test_the_nchw_path_is_taken_only_where_it_applies(nchw_weight_grads):
    conv = layers.Conv2d(4, 8, 3, padding=1).to(memory_format=torch.channels_last)
    x = torch.rand(1, 4, 8, 8).contiguous(memory_format=torch.channels_last)
    y = conv(x)
    assert type(y.grad_fn).__name__ == "_NCHWWeightGradConvBackward"
    torch.testing.assert_close(y, F.conv2d(x, conv.weight, conv.bias, padding=1))
    assert "_NCHWWeightGrad" not in type(conv(x.contiguous()).grad_fn).__name__  # NCHW input
    with torch.no_grad():
        assert conv(x).grad_fn is None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert "_NCHWWeightGrad" not in type(conv(x).grad_fn).__name__
    grouped = layers.Conv2d(4, 4, 3, padding=1, groups=4).to(memory_format=torch.channels_last)
    assert "_NCHWWeightGrad" not in type(grouped(x).grad_fn).__name__


def test_the_state_dict_is_that_of_nn_conv2d():
    torch.manual_seed(0)
    ours = layers.Conv2d(3, 5, 3, padding=1)
    torch.manual_seed(0)
    plain = torch.nn.Conv2d(3, 5, 3, padding=1)
    assert isinstance(ours, torch.nn.Conv2d)
    assert ours.state_dict().keys() == plain.state_dict().keys()
    for key, value in ours.state_dict().items():
        assert torch.equal(value, plain.state_dict()[key])


def test_an_unknown_layout_is_rejected():
    with pytest.raises(ValueError, match="weight-gradient layout must be one of"):
        kernels.set_weight_grad_layout("blocked")
