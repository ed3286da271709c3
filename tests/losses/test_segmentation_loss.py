"""SegmentationLoss: weighted terms, deep supervision, multi-class, builder."""

import pytest
import torch
import torch.nn.functional as F

from sa2_pipeline.losses.balanced_bce import balanced_bce_with_logits
from sa2_pipeline.losses.dice import soft_dice_loss
from sa2_pipeline.losses.segmentation_loss import SegmentationLoss, build_loss


@pytest.fixture
def binary_batch():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 1, 8, 8, generator=generator)
    target = (torch.rand(2, 1, 8, 8, generator=generator) > 0.6).float()
    return logits, target


def test_binary_default_is_half_dice_half_balanced_bce(binary_batch):
    logits, target = binary_batch
    expected = 0.5 * soft_dice_loss(logits, target) + 0.5 * balanced_bce_with_logits(logits, target)
    assert SegmentationLoss()(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)
    custom = SegmentationLoss(dice_weight=2.0, bce_weight=0.25)(logits, target)
    expected_custom = 2.0 * soft_dice_loss(logits, target) + 0.25 * balanced_bce_with_logits(
        logits, target
    )
    assert custom.item() == pytest.approx(expected_custom.item(), rel=1e-6)


def test_deep_supervision_sums_heads_with_weights(binary_batch):
    logits, target = binary_batch
    heads = [logits, logits * 0.5, -logits, logits + 1.0]
    loss = SegmentationLoss()
    single = [loss(head, target).item() for head in heads]
    assert loss(heads, target).item() == pytest.approx(sum(single), rel=1e-6)
    assert loss(tuple(heads), target).item() == pytest.approx(sum(single), rel=1e-6)
    weights = [1.0, 0.5, 0.25, 0.0]
    weighted = SegmentationLoss(head_weights=weights)(heads, target)
    assert weighted.item() == pytest.approx(
        sum(w * s for w, s in zip(weights, single, strict=True)), rel=1e-6
    )


def test_components_for_logging(binary_batch):
    logits, target = binary_batch
    logits = logits.clone().requires_grad_(True)
    loss = SegmentationLoss(head_weights=[1.0, 0.5])
    parts = loss.components([logits, -logits], target)
    assert set(parts) == {"loss", "dice", "bce", "head_0", "head_1"}
    assert parts["loss"].item() == pytest.approx(
        (parts["head_0"] + 0.5 * parts["head_1"]).item(), rel=1e-6
    )
    dice = soft_dice_loss(logits, target) + 0.5 * soft_dice_loss(-logits, target)
    assert parts["dice"].item() == pytest.approx(dice.item(), rel=1e-6)
    assert parts["loss"].requires_grad
    assert not parts["dice"].requires_grad


def test_lower_resolution_head_is_upsampled(binary_batch):
    logits, target = binary_batch
    low = logits[..., ::2, ::2].contiguous()
    up = F.interpolate(low, size=(8, 8), mode="bilinear")
    loss = SegmentationLoss()
    assert loss(low, target).item() == pytest.approx(loss(up, target).item(), rel=1e-6)
    with pytest.raises(ValueError, match="does not divide"):
        loss(torch.zeros(2, 1, 3, 3), target)


def test_multiclass_is_ce_plus_dice():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 6, 6, generator=generator)
    target = torch.randint(0, 3, (2, 6, 6), generator=generator)
    loss = SegmentationLoss(num_classes=3, ce_weight=1.0, dice_weight=0.5)
    expected = F.cross_entropy(logits, target) + 0.5 * soft_dice_loss(
        logits, target, multiclass=True
    )
    assert loss(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)
    assert loss(logits, target[:, None]).item() == pytest.approx(expected.item(), rel=1e-6)
    assert set(loss.components(logits, target)) == {"loss", "dice", "ce", "head_0"}


def test_backward_finite_under_bf16_autocast():
    conv = torch.nn.Conv2d(3, 1, 3, padding=1)
    x = torch.randn(2, 3, 16, 16)
    target = (torch.rand(2, 1, 16, 16) > 0.7).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv(x)
        loss = SegmentationLoss()([out, out * 2, out * 3, out * 4], target)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(conv.weight.grad).all()


def test_build_loss_and_errors(binary_batch):
    logits, target = binary_batch
    loss = build_loss(1, dice_weight=1.0, bce_weight=0.0)
    assert loss(logits, target).item() == pytest.approx(
        soft_dice_loss(logits, target).item(), rel=1e-6
    )
    with pytest.raises(ValueError, match="unknown loss parameter"):
        build_loss(1, dice_wieght=1.0)
    with pytest.raises(ValueError, match="head_weights"):
        SegmentationLoss(head_weights=[1.0, 1.0])([logits], target)
    with pytest.raises(ValueError, match="num_classes=1"):
        SegmentationLoss()(torch.zeros(2, 3, 8, 8), target)
    with pytest.raises(ValueError, match=">= 0"):
        SegmentationLoss(dice_weight=-1.0)
    with pytest.raises(ValueError, match="num_classes"):
        build_loss(0)
