"""SA2-Net specifics: size, intermediate shapes, and the math against docs/network.md.

The reference below re-implements docs/network.md step by step with ``torch.nn.functional``
calls on the model's own tensors, in that page's literal order (nearest upsampling before
the LayerNorm, channel halves split and concatenated in the MSFN, heads applied after the
bilinear resize); the model computes the same function with cheaper orderings.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sa2_pipeline.models import create_model
from sa2_pipeline.models.layers import LayerNorm2d
from sa2_pipeline.models.sa2net import SA2Net

PAPER_PARAMETERS = 19_296_596  # used by the release's forward pass (in=3, n=1, C=64)


def _small_model(**kwargs) -> SA2Net:
    torch.manual_seed(0)
    model = create_model("sa2net", **{"base_channels": 8, **kwargs})
    # Non-trivial norm parameters and statistics, so that a wrong wiring shows.
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            if isinstance(module, (torch.nn.BatchNorm2d, LayerNorm2d)):
                module.weight.copy_(1 + 0.2 * torch.randn(module.weight.shape, generator=gen))
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=gen))
    return model


# --------------------------------------------------------------------------------------
# Size
# --------------------------------------------------------------------------------------
def test_paper_configuration_has_the_release_parameter_count():
    with torch.device("meta"):  # shapes only: no memory, no init
        model = create_model("sa2net", in_channels=3, num_classes=1, base_channels=64)
    assert sum(p.numel() for p in model.parameters()) == PAPER_PARAMETERS


def test_without_deep_supervision_no_auxiliary_heads_are_allocated():
    with torch.device("meta"):
        model = create_model("sa2net", base_channels=64, deep_supervision=False)
    aux = 64 + 1 + 128 + 1 + 256 + 1  # the three 1x1 heads on d2, d3, d4
    assert sum(p.numel() for p in model.parameters()) == PAPER_PARAMETERS - aux
    assert model.aux_heads is None


def test_intermediate_shapes_follow_the_spec_tables():
    c = 8
    model = create_model("sa2net", base_channels=c).eval()
    seen: dict[str, object] = {}

    def keep(name):
        return lambda module, inputs, output: seen.__setitem__(name, output)

    for i, stage in enumerate(model.encoder.stages):
        stage.register_forward_hook(keep(f"x{i + 1}"))
    model.sa2.register_forward_hook(keep("S"))
    for i, block in enumerate(model.decoder.blocks):
        block.register_forward_hook(keep(f"d{i + 1}"))
    with torch.no_grad():
        model(torch.randn(1, 3, 224, 224))

    expected = {
        "x1": (c, 224), "x2": (2 * c, 112), "x3": (4 * c, 56), "x4": (8 * c, 28),
        "x5": (8 * c, 14), "d4": (4 * c, 28), "d3": (2 * c, 56), "d2": (c, 112),
        "d1": (c, 224),
    }  # fmt: skip
    for name, (channels, side) in expected.items():
        assert seen[name].shape == (1, channels, side, side), name
    skips = seen["S"]
    assert [tuple(s.shape) for s in skips] == [
        (1, c, 224, 224), (1, 2 * c, 112, 112), (1, 4 * c, 56, 56), (1, 8 * c, 28, 28)
    ]  # fmt: skip


def test_eval_computes_no_auxiliary_path(monkeypatch):
    import sa2_pipeline.models.base as model_module

    model = create_model("sa2net", base_channels=8)
    used = []
    original = model_module.pointwise_conv

    def recording(x, weight, bias=None):
        used.append(weight)
        return original(x, weight, bias)

    monkeypatch.setattr(model_module, "pointwise_conv", recording)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        model.eval()(x)
        assert [w is model.head.weight for w in used] == [True]
        used.clear()
        model.train()(x)
    assert {id(w) for w in used} == {id(model.head.weight)} | {
        id(head.weight) for head in model.aux_heads
    }


def test_constructor_rejects_bad_sizes():
    with pytest.raises(ValueError, match="base_channels must be a positive int"):
        SA2Net(base_channels=0)


# --------------------------------------------------------------------------------------
# Reference implementation of docs/network.md, step by step
# --------------------------------------------------------------------------------------
def _conv(p: dict, name: str, x: torch.Tensor, groups: int = 1) -> torch.Tensor:
    w = p[f"{name}.weight"]
    return F.conv2d(x, w, p[f"{name}.bias"], padding=w.shape[-1] // 2, groups=groups)


def _dwconv(p: dict, name: str, x: torch.Tensor) -> torch.Tensor:
    return _conv(p, name, x, groups=x.shape[1])


def _bn(p: dict, name: str, x: torch.Tensor, training: bool) -> torch.Tensor:
    return F.batch_norm(
        x,
        p[f"{name}.running_mean"].clone(),
        p[f"{name}.running_var"].clone(),
        p[f"{name}.weight"],
        p[f"{name}.bias"],
        training=training,
        momentum=0.1,
        eps=1e-5,
    )


def _ln(p: dict, name: str, x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(1, keepdim=True)
    var = (x - mean).pow(2).mean(1, keepdim=True)
    y = (x - mean) / torch.sqrt(var + 1e-6)
    return p[f"{name}.weight"][:, None, None] * y + p[f"{name}.bias"][:, None, None]


def _cbr(p: dict, name: str, x: torch.Tensor, training: bool) -> torch.Tensor:
    return F.relu(_bn(p, f"{name}.norm", _conv(p, f"{name}.conv", x), training))


def _bilinear(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def _gelu(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1 + torch.erf(x / 2**0.5))


def ref_msfn(p: dict, name: str, x: torch.Tensor) -> torch.Tensor:
    h = _conv(p, f"{name}.project_in", x)
    a = F.relu(_dwconv(p, f"{name}.dwconv3", h))
    b = F.relu(_dwconv(p, f"{name}.dwconv5", h))
    a1, a2 = a.chunk(2, dim=1)
    b1, b2 = b.chunk(2, dim=1)
    return _conv(
        p, f"{name}.project_out", torch.cat([a1 * torch.sigmoid(b1), a2 * torch.sigmoid(b2)], 1)
    )


def ref_conv_mlp(p: dict, name: str, u: torch.Tensor) -> torch.Tensor:
    z = _ln(p, f"{name}.norm", u)
    z = z + _gelu(_dwconv(p, f"{name}.dwconv", z))
    z = _conv(p, f"{name}.fc2", _gelu(_conv(p, f"{name}.fc1", z)))
    return z + u


def ref_sa2(p: dict, name: str, xs: list, training: bool) -> list[torch.Tensor]:
    x1, x2, x3, x4 = xs
    c = x1.shape[1]
    e = [x1] + [_conv(p, f"{name}.side_convs.{i}", x) for i, x in ((1, x2), (2, x3), (3, x4))]
    ref = e[2].shape[-2:]
    s = [
        ref_msfn(p, f"{name}.msfns.{i}", e[i] if i == 2 else _bilinear(e[i], ref)) for i in range(4)
    ]
    f = _gelu(_conv(p, f"{name}.fuse_conv", _bn(p, f"{name}.fuse_norm", torch.cat(s, 1), training)))
    q, g = f[:, :c], f[:, c:]
    assert g.shape[1] == 4
    q = _gelu(_dwconv(p, f"{name}.query_conv", q))
    out = []
    for i in range(4):
        t = s[i] * g[:, i : i + 1] * q
        u = (t if i == 2 else _bilinear(t, e[i].shape[-2:])) + e[i]
        out.append(_conv(p, f"{name}.out_convs.{i}", ref_conv_mlp(p, f"{name}.mlps.{i}", u)))
    return out


def ref_aua(p: dict, name: str, d: torch.Tensor, s: torch.Tensor, training: bool) -> torch.Tensor:
    g = F.interpolate(d, scale_factor=2, mode="nearest")
    g = _dwconv(p, f"{name}.up_dw", _gelu(_conv(p, f"{name}.up_pw", _ln(p, f"{name}.up_norm", g))))
    x = _dwconv(p, f"{name}.skip_dw", s)
    psi = _conv(p, f"{name}.psi_conv", _gelu(torch.cat([g, x], 1)))
    psi = torch.sigmoid(_bn(p, f"{name}.psi_norm", psi, training))
    y = _conv(p, f"{name}.skip_proj", psi * x) + s
    return _cbr(p, f"{name}.convs.1", _cbr(p, f"{name}.convs.0", y, training), training)


def ref_sa2net(p: dict, x: torch.Tensor, training: bool) -> list[torch.Tensor]:
    h, w = x.shape[-2:]
    ph, pw = -h % 16, -w % 16
    x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), mode="reflect")
    feats = [_cbr(p, "encoder.stages.0.convs.0", x, training)]
    for k in range(1, 5):
        y = F.max_pool2d(feats[-1], 2)
        for j in range(2):
            y = _cbr(p, f"encoder.stages.{k}.convs.{j}", y, training)
        feats.append(y)
    skips = ref_sa2(p, "sa2", feats[:4], training)
    d = _conv(p, "decoder.input_conv", feats[4])
    ds = {}
    for k in (4, 3, 2, 1):
        d = ref_aua(p, f"decoder.blocks.{k - 1}", d, skips[k - 1], training)
        ds[k] = d
    full = x.shape[-2:]
    outs = [_conv(p, "head", ds[1])]
    if training:
        outs += [_conv(p, f"aux_heads.{i}", _bilinear(ds[i + 2], full)) for i in range(3)]
    top, left = ph // 2, pw // 2
    return [o[..., top : top + h, left : left + w] for o in outs]


def _tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in model.state_dict().items()}


def test_msfn_and_conv_mlp_match_the_spec():
    model = _small_model()
    p = _tensors(model)
    x = torch.randn(2, 8, 20, 12)
    with torch.no_grad():
        torch.testing.assert_close(model.sa2.msfns[1](x), ref_msfn(p, "sa2.msfns.1", x))
        torch.testing.assert_close(model.sa2.mlps[3](x), ref_conv_mlp(p, "sa2.mlps.3", x))


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_layernorm2d_matches_the_per_pixel_definition(memory_format):
    norm = LayerNorm2d(6)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = (torch.randn(2, 6, 5, 7) * 3 + 1).contiguous(memory_format=memory_format)
    with torch.no_grad():
        out = norm(x)
        expected = _ln({"norm.weight": norm.weight, "norm.bias": norm.bias}, "norm", x)
    torch.testing.assert_close(out, expected)
    assert out.is_contiguous(memory_format=memory_format)


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_aua_block_matches_the_spec(training):
    model = _small_model().train(training)
    p = _tensors(model)
    block = model.decoder.blocks[2]  # up3: F = 4C = 32 -> out 2C = 16
    d, s = torch.randn(2, 32, 6, 5), torch.randn(2, 32, 12, 10)
    with torch.no_grad():
        got = block(d, s)
    torch.testing.assert_close(got, ref_aua(p, "decoder.blocks.2", d, s, training))
    assert got.shape == (2, 16, 12, 10)


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_sa2_module_matches_the_spec(training):
    model = _small_model().train(training)
    p = _tensors(model)
    c = 8
    xs = [torch.randn(2, c * m, 64 // r, 48 // r) for m, r in ((1, 1), (2, 2), (4, 4), (8, 8))]
    with torch.no_grad():
        got = model.sa2(xs)
    for g, r in zip(got, ref_sa2(p, "sa2", xs, training), strict=True):
        torch.testing.assert_close(g, r)


@pytest.mark.parametrize("size", [(64, 48), (37, 50)])
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_whole_network_matches_the_spec(training, size):
    model = _small_model(num_classes=2).train(training)
    p = _tensors(model)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        got = model(x)
    got = list(got) if isinstance(got, tuple) else [got]
    expected = ref_sa2net(p, x, training)
    assert len(got) == len(expected) == (4 if training else 1)
    for g, r in zip(got, expected, strict=True):
        assert g.shape == (2, 2, *size)
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5)
