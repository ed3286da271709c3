"""Class-balanced BCE on logits."""

import math

import pytest
import torch

from sa2_pipeline.losses.balanced_bce import balanced_bce_with_logits


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_equals_hand_formula():
    logits = torch.tensor([[[[2.0, -1.0], [0.0, 3.0]]]])
    target = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    # BCE(x, 1) = log(1 + e^-x), BCE(x, 0) = log(1 + e^x).
    positive = (_softplus(-2.0) + _softplus(-3.0)) / 2
    negative = (_softplus(-1.0) + _softplus(0.0)) / 2
    expected = 0.5 * positive + 0.5 * negative
    assert balanced_bce_with_logits(logits, target).item() == pytest.approx(expected, rel=1e-6)
    assert balanced_bce_with_logits(logits, target[:, 0]).item() == pytest.approx(
        expected, rel=1e-6
    )


def test_pooled_over_the_batch_not_per_image():
    logits = torch.tensor([[[[1.0, 1.0]]], [[[-2.0, 0.5]]]])
    target = torch.tensor([[[[1.0, 1.0]]], [[[1.0, 0.0]]]])
    positive = (2 * _softplus(-1.0) + _softplus(2.0)) / 3
    negative = _softplus(0.5)
    assert balanced_bce_with_logits(logits, target).item() == pytest.approx(
        0.5 * positive + 0.5 * negative, rel=1e-6
    )


def test_no_positives_or_no_negatives_is_finite():
    logits = torch.tensor([[[[0.5, -1.0]]]])
    no_pos = balanced_bce_with_logits(logits, torch.zeros_like(logits))
    assert no_pos.item() == pytest.approx(0.5 * (_softplus(0.5) + _softplus(-1.0)) / 2, rel=1e-6)
    no_neg = balanced_bce_with_logits(logits, torch.ones_like(logits))
    assert no_neg.item() == pytest.approx(0.5 * (_softplus(-0.5) + _softplus(1.0)) / 2, rel=1e-6)
    logits.requires_grad_(True)
    balanced_bce_with_logits(logits, torch.zeros_like(logits)).backward()
    assert torch.isfinite(logits.grad).all()


def test_large_logits_are_stable():
    logits = torch.tensor([[[[200.0, -200.0]]]])
    target = torch.tensor([[[[0.0, 1.0]]]])
    assert balanced_bce_with_logits(logits, target).item() == pytest.approx(200.0, rel=1e-6)


def test_gradients_finite_under_bf16_autocast():
    conv = torch.nn.Conv2d(3, 1, 3, padding=1)
    x = torch.randn(2, 3, 16, 16) * 10
    target = (torch.rand(2, 1, 16, 16) > 0.8).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = balanced_bce_with_logits(conv(x), target)
    assert loss.dtype == torch.float32
    loss.backward()
    assert torch.isfinite(conv.weight.grad).all()


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="does not match"):
        balanced_bce_with_logits(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 3))
    with pytest.raises(ValueError, match="positive_weight"):
        balanced_bce_with_logits(
            torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), positive_weight=1.5
        )
