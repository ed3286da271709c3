"""Dice / IoU metrics on hand-made masks."""

import numpy as np
import pandas as pd
import pytest
import torch

from sa2_pipeline.metrics.segmentation import (
    batch_dice_from_logits,
    dice_iou,
    per_class_dice_iou,
    summarise,
)

PRED = np.array([[1, 1, 0], [0, 0, 0]], dtype=np.uint8)
TARGET = np.array([[1, 0, 0], [1, 0, 0]], dtype=np.uint8)


def test_dice_iou_exact_fractions():
    # |P| = 2, |T| = 2, |P & T| = 1, |P | T| = 3.
    dice, iou = dice_iou(PRED, TARGET, smooth=0.0)
    assert dice == pytest.approx(0.5)
    assert iou == pytest.approx(1 / 3)
    dice_s, iou_s = dice_iou(PRED, TARGET)  # s = 1e-5 in the denominators
    assert dice_s == pytest.approx(2 / (4 + 1e-5), rel=1e-12)
    assert iou_s == pytest.approx(1 / (3 + 1e-5), rel=1e-12)
    # The release's other smoothing (s = 1).
    assert dice_iou(PRED, TARGET, smooth=1.0) == pytest.approx((2 / 5, 1 / 4))


def test_nonzero_counts_as_foreground_and_perfect_match():
    assert dice_iou(TARGET * 255, TARGET.astype(bool), smooth=0.0) == (1.0, 1.0)


def test_empty_conventions():
    empty = np.zeros((4, 4), dtype=np.uint8)
    assert dice_iou(empty, empty) == (1.0, 1.0)
    full = np.ones((4, 4), dtype=np.uint8)
    assert dice_iou(empty, full) == (0.0, 0.0)
    assert dice_iou(full, empty) == (0.0, 0.0)


def test_dice_iou_errors():
    with pytest.raises(ValueError, match="shape"):
        dice_iou(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="smooth"):
        dice_iou(PRED, TARGET, smooth=-1)


def test_per_class_dice_iou():
    pred = np.array([[0, 1, 1], [2, 2, 0]])
    target = np.array([[0, 1, 0], [2, 2, 2]])
    result = per_class_dice_iou(pred, target, num_classes=4, smooth=0.0)
    # Class 1: |P| = 2, |T| = 1, I = 1 -> Dice 2/3, IoU 1/2.
    # Class 2: |P| = 2, |T| = 3, I = 2 -> Dice 4/5, IoU 2/3.
    # Class 3: absent from both -> 1.0 by convention.
    assert result["dice_class_1"] == pytest.approx(2 / 3)
    assert result["iou_class_1"] == pytest.approx(1 / 2)
    assert result["dice_class_2"] == pytest.approx(4 / 5)
    assert result["iou_class_2"] == pytest.approx(2 / 3)
    assert result["dice_class_3"] == 1.0
    assert result["dice_mean"] == pytest.approx((2 / 3 + 4 / 5 + 1) / 3)
    assert "dice_class_0" not in result
    with_bg = per_class_dice_iou(pred, target, num_classes=4, ignore_background=False, smooth=0.0)
    # Class 0: P = {(0,0), (1,2)}, T = {(0,0), (0,2)}: I = 1 -> Dice 2/4, IoU 1/3.
    assert with_bg["dice_class_0"] == pytest.approx(1 / 2)
    assert with_bg["iou_class_0"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        per_class_dice_iou(pred, target, num_classes=2)
    with pytest.raises(ValueError, match="num_classes"):
        per_class_dice_iou(pred, target, num_classes=1)


def test_batch_dice_from_logits_binary():
    target = torch.tensor(
        [[[1, 0, 0], [1, 0, 0]], [[0, 0, 0], [0, 0, 0]], [[1, 1, 1], [0, 0, 0]]]
    ).float()
    pred = torch.tensor(
        [[[1, 1, 0], [0, 0, 0]], [[0, 0, 0], [0, 0, 0]], [[0, 0, 0], [0, 0, 0]]]
    ).float()
    logits = (pred * 2 - 1)[:, None] * 5
    dice = batch_dice_from_logits(logits, target)
    assert dice.shape == (3,)
    assert dice.tolist() == pytest.approx([0.5, 1.0, 0.0])
    assert batch_dice_from_logits(logits, target[:, None]).tolist() == pytest.approx(
        [0.5, 1.0, 0.0]
    )
    # A high threshold turns sigmoid(5) ~ 0.9933 predictions off.
    assert batch_dice_from_logits(logits, target, threshold=0.999).tolist() == pytest.approx(
        [0.0, 1.0, 0.0]
    )


def test_batch_dice_from_logits_multiclass():
    pred = torch.tensor([[[0, 1, 1], [2, 2, 0]]])
    target = torch.tensor([[[0, 1, 0], [2, 2, 2]]])
    logits = torch.nn.functional.one_hot(pred, 4).permute(0, 3, 1, 2).float() * 3
    # Foreground classes 1, 2, 3: 2/3, 4/5, 1 (absent from both).
    assert batch_dice_from_logits(logits, target).item() == pytest.approx((2 / 3 + 4 / 5 + 1) / 3)
    with pytest.raises(ValueError, match="does not match"):
        batch_dice_from_logits(logits, target[:, :1])


def test_summarise():
    frame = pd.DataFrame(
        {"image_id": ["a", "b", "c"], "dice": [0.5, 1.0, 0.75], "iou": [0.2, 0.4, 0.9]}
    )
    summary = summarise(frame)
    assert summary["dice_mean"] == pytest.approx(0.75)
    assert summary["dice_median"] == pytest.approx(0.75)
    assert summary["dice_std"] == pytest.approx(np.std([0.5, 1.0, 0.75]))
    assert summary["iou_median"] == pytest.approx(0.4)
    assert summary["n_images"] == 3
    assert not any(key.startswith("image_id") for key in summary)
    with pytest.raises(ValueError, match="numeric"):
        summarise(frame[["image_id"]])


def test_score_binary_and_multiclass_keys():
    from sa2_pipeline.metrics import score

    assert score(PRED, TARGET, 1) == pytest.approx(
        dict(zip(("dice", "iou"), dice_iou(PRED, TARGET), strict=True)))
    pred = np.array([[0, 1, 1], [2, 2, 0]])
    target = np.array([[0, 1, 0], [2, 2, 2]])
    scores = score(pred, target, 3)
    assert list(scores) == ["dice", "iou", "dice_class_1", "iou_class_1",
                            "dice_class_2", "iou_class_2"]
    per_class = per_class_dice_iou(pred, target, 3)
    assert scores["dice"] == per_class["dice_mean"] and scores["iou"] == per_class["iou_mean"]
    assert scores["dice_class_2"] == pytest.approx(4 / (5 + 1e-5))
    with pytest.raises(ValueError, match="num_classes"):
        score(pred, target, 0)
