"""Soft Dice loss: release definition (squared denominator, per image), multi-class form."""

import math

import pytest
import torch

from sa2_pipeline.losses.dice import soft_dice_loss


def test_perfect_logits_give_zero_loss():
    target = torch.zeros(2, 1, 8, 8)
    target[0, :, 2:5, 3:7] = 1
    logits = (target * 2 - 1) * 50  # sigmoid saturates to exactly 0 / 1
    assert soft_dice_loss(logits, target).item() == pytest.approx(0.0, abs=1e-6)
    assert soft_dice_loss(logits, target[:, 0]).item() == pytest.approx(0.0, abs=1e-6)


def test_hand_computed_binary_case():
    # p = sigmoid(ln 3) = 3/4 everywhere on 2x2 images.
    logits = torch.full((2, 1, 2, 2), math.log(3.0))
    target = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]], [[[1.0, 1.0], [1.0, 1.0]]]])
    # Image 0: sum(pt) = 3/4, sum(p^2) = 4 * 9/16 = 9/4, sum(t^2) = 1 -> Dice = 1.5 / 3.25 = 6/13.
    # Image 1: sum(pt) = 3,   sum(p^2) = 9/4,          sum(t^2) = 4 -> Dice = 6 / 6.25 = 24/25.
    expected = ((1 - 6 / 13) + (1 - 24 / 25)) / 2
    assert soft_dice_loss(logits, target, eps=0.0).item() == pytest.approx(expected, rel=1e-6)
    # eps enters numerator and denominator.
    eps = 1e-5
    with_eps = ((1 - (1.5 + eps) / (3.25 + eps)) + (1 - (6 + eps) / (6.25 + eps))) / 2
    assert soft_dice_loss(logits, target, eps=eps).item() == pytest.approx(with_eps, rel=1e-6)


def test_linear_denominator():
    logits = torch.full((1, 1, 2, 2), math.log(3.0))
    target = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    # sum(p) = 3, sum(t) = 1 -> Dice = 1.5 / 4.
    loss = soft_dice_loss(logits, target, squared_denominator=False, eps=0.0)
    assert loss.item() == pytest.approx(1 - 1.5 / 4, rel=1e-6)


def test_empty_image_and_empty_prediction_scores_zero_loss():
    logits = torch.full((1, 1, 4, 4), -60.0)
    assert soft_dice_loss(logits, torch.zeros(1, 1, 4, 4)).item() == pytest.approx(0.0, abs=1e-6)


def test_multiclass_hand_computed_and_ignore_background():
    # Two classes, softmax of (0, ln 3): p0 = 1/4, p1 = 3/4 at every pixel of a 2x2 image.
    logits = torch.zeros(1, 2, 2, 2)
    logits[:, 1] = math.log(3.0)
    target = torch.tensor([[[1, 0], [0, 0]]])
    # Class 1: sum(pt) = 3/4, sum(p^2) = 9/4, sum(t^2) = 1  -> Dice 6/13.
    # Class 0: sum(pt) = 3/4, sum(p^2) = 1/4, sum(t^2) = 3  -> Dice 1.5/3.25 = 6/13.
    loss_all = soft_dice_loss(logits, target, multiclass=True, eps=0.0)
    assert loss_all.item() == pytest.approx(7 / 13, rel=1e-6)
    target2 = torch.tensor([[[1, 1], [0, 0]]])
    # Class 1: sum(pt) = 1.5, sum(p^2) = 9/4, sum(t^2) = 2 -> Dice 3/4.25.
    # Class 0: sum(pt) = 0.5, sum(p^2) = 1/4, sum(t^2) = 2 -> Dice 1/2.25.
    loss_fg = soft_dice_loss(logits, target2, multiclass=True, ignore_background=True, eps=0.0)
    assert loss_fg.item() == pytest.approx(1 - 3 / 4.25, rel=1e-6)
    loss_both = soft_dice_loss(logits, target2, multiclass=True, eps=0.0)
    assert loss_both.item() == pytest.approx(((1 - 3 / 4.25) + (1 - 1 / 2.25)) / 2, rel=1e-6)


def test_gradients_finite_under_bf16_autocast():
    conv = torch.nn.Conv2d(3, 1, 3, padding=1)
    x = torch.randn(2, 3, 16, 16)
    target = (torch.rand(2, 1, 16, 16) > 0.7).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = conv(x)
        assert logits.dtype == torch.bfloat16
        loss = soft_dice_loss(logits, target)
    assert loss.dtype == torch.float32
    loss.backward()
    assert torch.isfinite(conv.weight.grad).all()


@pytest.mark.parametrize(
    ("logits", "target", "kwargs", "message"),
    [
        (torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 5), {}, "does not match"),
        (torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 4), {}, "one logit channel"),
        (torch.zeros(2, 3, 4, 4), torch.full((2, 4, 4), 3), {"multiclass": True}, r"\[0, 2\]"),
        (torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 4), {"multiclass": True}, "integer"),
        (torch.zeros(2, 1, 4, 4), torch.zeros(2, 4, 4), {"eps": -1.0}, "eps"),
    ],
)
def test_bad_arguments_raise(logits, target, kwargs, message):
    with pytest.raises(ValueError, match=message):
        soft_dice_loss(logits, target, **kwargs)
