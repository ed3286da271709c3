"""One behaviour contract, checked for every registered model (small configurations).

A new model registered in ``sa2_pipeline.models`` is picked up automatically; give it a
small configuration in ``SMALL_CONFIGS`` if ``base_channels=8`` does not fit it.
"""

from __future__ import annotations

import shutil

import pytest
import torch
import torch.nn.functional as F

from sa2_pipeline.models import create_model, list_models

SMALL_CONFIGS: dict[str, dict] = {
    "sa2net": {"base_channels": 8},
    "unet": {"base_channels": 8},
}
# Extra variants beyond each model's defaults (SA2Net supervises deeply by default, the
# U-Net does not).
EXTRA_CASES = [
    ("sa2net", {"base_channels": 8, "deep_supervision": False}),
    ("unet", {"base_channels": 8, "deep_supervision": True, "upsampling": "bilinear"}),
]
CASES = [(name, SMALL_CONFIGS.get(name, {"base_channels": 8})) for name in list_models()]
CASES += [case for case in EXTRA_CASES if case[0] in list_models()]


def _case_id(case: tuple[str, dict]) -> str:
    name, kwargs = case
    return "-".join([name] + [f"{k}={v}" for k, v in kwargs.items() if k != "base_channels"])


@pytest.fixture(params=CASES, ids=[_case_id(c) for c in CASES])
def case(request) -> tuple[str, dict]:
    return request.param


def _build(case, **overrides) -> torch.nn.Module:
    name, kwargs = case
    torch.manual_seed(0)
    return create_model(name, **{**kwargs, **overrides})


def _as_tuple(out) -> tuple[torch.Tensor, ...]:
    return out if isinstance(out, tuple) else (out,)


def _expected_train_outputs(model) -> int:
    return 4 if model.init_kwargs.get("deep_supervision") else 1


def _randomise_norm_stats(model: torch.nn.Module) -> None:
    """Make BatchNorm running stats non-trivial so eval-mode comparisons mean something."""
    gen = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=gen) * 0.1)
            module.running_var.copy_(torch.rand(module.num_features, generator=gen) + 0.5)


class TestSegmentationModel:
    """Behaviour every segmentation model in the registry must have."""

    def test_forward_backward_reaches_every_parameter(self, case):
        model = _build(case, in_channels=2, num_classes=3).train()
        x = torch.randn(2, 2, 32, 48)
        outputs = _as_tuple(model(x))
        assert len(outputs) == _expected_train_outputs(model)
        target = torch.randint(0, 3, (2, 32, 48))
        loss = sum(F.cross_entropy(out, target) for out in outputs)
        loss.backward()
        no_grad = [n for n, p in model.named_parameters() if p.grad is None]
        assert not no_grad, f"parameters without gradient: {no_grad}"
        non_finite = [n for n, p in model.named_parameters() if not p.grad.isfinite().all()]
        assert not non_finite
        # Conv biases right before a train-mode BatchNorm legitimately get ~0 gradient;
        # everything else must actually be trained.
        dead = [
            n
            for n, p in model.named_parameters()
            if p.grad.abs().max() == 0 and not n.endswith("conv.bias")
        ]
        assert not dead, f"parameters with all-zero gradient: {dead}"

    @pytest.mark.parametrize("size", [(17, 33), (50, 31), (16, 16), (64, 48)])
    def test_any_size_from_16_returns_the_input_size(self, case, size):
        model = _build(case, num_classes=2)
        x = torch.randn(2, 3, *size)
        model.train()
        for out in _as_tuple(model(x)):
            assert out.shape == (2, 2, *size)
        model.eval()
        with torch.no_grad():
            assert model(x).shape == (2, 2, *size)

    def test_train_mode_output_contract(self, case):
        model = _build(case).train()
        outputs = model(torch.randn(2, 3, 32, 32))
        if _expected_train_outputs(model) == 4:
            assert isinstance(outputs, tuple) and len(outputs) == 4
        else:
            assert isinstance(outputs, torch.Tensor)
        for out in _as_tuple(outputs):
            assert out.shape == (2, 1, 32, 32)
            assert out.dtype == torch.float32

    def test_eval_mode_returns_main_logits_only(self, case):
        model = _build(case).eval()
        with torch.no_grad():
            model.head.bias.fill_(-20.0)  # a sigmoid inside the model would hide this
            out = model(torch.randn(2, 3, 32, 32))
        assert isinstance(out, torch.Tensor)
        assert out.shape == (2, 1, 32, 32)
        assert out.max() < 0

    def test_eval_main_output_equals_train_main_output_with_same_norm_stats(self, case):
        # Auxiliary outputs are extra: they must not change the main path.
        model = _build(case)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.track_running_stats = False  # batch stats in both modes
                module.running_mean = module.running_var = None
        x = torch.randn(2, 3, 32, 32)
        with torch.no_grad():
            train_main = _as_tuple(model.train()(x))[0]
            eval_main = model.eval()(x)
        torch.testing.assert_close(train_main, eval_main)

    def test_state_dict_round_trip_rebuilds_the_same_function(self, case, tmp_path):
        model = _build(case, num_classes=2)
        model.train()(torch.randn(2, 3, 32, 32))  # move BN running stats off defaults
        path = tmp_path / "model.pt"
        torch.save(
            {
                "model_name": model.model_name,
                "init_kwargs": model.init_kwargs,
                "state_dict": model.state_dict(),
            },
            path,
        )
        checkpoint = torch.load(path, weights_only=True)
        torch.manual_seed(123)  # a different init, overwritten by the load
        rebuilt = create_model(checkpoint["model_name"], **checkpoint["init_kwargs"])
        rebuilt.load_state_dict(checkpoint["state_dict"], strict=True)
        x = torch.randn(1, 3, 40, 24)
        with torch.no_grad():
            assert torch.equal(model.eval()(x), rebuilt.eval()(x))

    def test_eval_output_is_deterministic(self, case):
        model = _build(case).eval()
        x = torch.randn(2, 3, 48, 32)
        with torch.no_grad():
            assert torch.equal(model(x), model(x))

    def test_channels_last_matches_contiguous(self, case):
        model = _build(case, num_classes=2)
        _randomise_norm_stats(model)
        x = torch.randn(2, 3, 40, 56)
        with torch.no_grad():
            expected = model.eval()(x)
            model = model.to(memory_format=torch.channels_last)
            got = model(x.contiguous(memory_format=torch.channels_last))
            train_out = _as_tuple(model.train()(x.contiguous(memory_format=torch.channels_last)))
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
        assert all(out.shape == (2, 2, 40, 56) for out in train_out)

    def test_bfloat16_autocast_trains_and_stays_close_to_float32(self, case):
        model = _build(case).train()
        x = torch.randn(2, 3, 32, 48)
        reference = _as_tuple(model(x))[0].detach()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outputs = _as_tuple(model(x))
        target = torch.ones_like(reference)
        loss = sum(F.binary_cross_entropy_with_logits(out.float(), target) for out in outputs)
        loss.backward()
        assert all(p.grad is not None and p.grad.isfinite().all() for p in model.parameters())
        torch.testing.assert_close(outputs[0].float(), reference, rtol=0.1, atol=0.1)

    def test_too_small_input_is_refused_naming_the_rule(self, case):
        model = _build(case).eval()
        for size in [(15, 32), (32, 8)]:
            with pytest.raises(ValueError, match=rf">= 16.*H={size[0]}, W={size[1]}"):
                model(torch.randn(1, 3, *size))

    def test_wrong_channel_count_is_refused(self, case):
        model = _build(case).eval()
        with pytest.raises(ValueError, match="in_channels=3.*4 channels"):
            model(torch.randn(1, 4, 32, 32))
        with pytest.raises(ValueError, match="4-D"):
            model(torch.randn(3, 32, 32))

    @pytest.mark.slow
    def test_torch_compile_matches_eager(self, case):
        if case in EXTRA_CASES:
            pytest.skip("compiled once per model, in its default configuration")
        _require_inductor()
        model = _build(case).eval()
        _randomise_norm_stats(model)
        x = torch.randn(1, 3, 32, 48)
        compiled = torch.compile(model, dynamic=False)
        with torch.no_grad():
            torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)
        # One compiled training step: gradients flow through the compiled graph.
        model.train()
        loss = sum(out.mean() for out in _as_tuple(compiled(x)))
        loss.backward()
        assert all(p.grad is not None for p in model.parameters())


def _require_inductor() -> None:
    """Skip unless torch.compile's default (inductor) backend can build CPU code here."""
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("torch.compile needs a C compiler (none found)")
    try:
        torch.compile(lambda t: t.sin() + 1, dynamic=False)(torch.ones(4))
    except Exception as err:  # any backend failure means: not available here
        pytest.skip(f"inductor backend unavailable: {type(err).__name__}: {err}")
