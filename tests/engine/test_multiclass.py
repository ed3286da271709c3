"""num_classes > 1: softmax cross-entropy + Dice training and per-class evaluation."""

import numpy as np
import pytest

from sa2_pipeline.config import ModelConfig, TrainingConfig, parse
from sa2_pipeline.engine.fit import fit_segmentation_model
from sa2_pipeline.pipelines.evaluation.nodes import evaluate_models


def _three_class_data(n: int, seed: int, size: int = 40):
    """Background 0, bright squares class 1, dark-blue discs class 2."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images, masks = {}, {}
    for k in range(n):
        mask = np.zeros((size, size), np.uint8)
        r, c = rng.integers(4, size - 14, 2)
        mask[r:r + 10, c:c + 10] = 1
        cy, cx = rng.integers(8, size - 8, 2)
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= 25] = 2
        colours = np.array([[200, 170, 190], [250, 250, 250], [40, 40, 160]], float)
        image = colours[mask] + rng.normal(0, 8, (size, size, 3))
        images[f"m{k}"] = np.clip(image, 0, 255).astype(np.uint8)
        masks[f"m{k}"] = mask
    return images, masks


def test_three_classes_train_and_are_scored_per_class(tmp_path):
    model = ModelConfig(name="sa2net", num_classes=3, base_channels=4)
    cfg = parse(TrainingConfig, {
        "epochs": 4, "batch_size": 2, "patch_size": 32, "samples_per_epoch": 8,
        "num_threads": 1, "checkpoint_dir": str(tmp_path), "resume": False,
        "augmentation": {"name": "none"}, "lr": 0.01}, "training")
    train_images, train_masks = _three_class_data(4, seed=1)
    val_images, val_masks = _three_class_data(2, seed=2)
    bundle, history = fit_segmentation_model(
        train_images, train_masks, val_images, val_masks, model, cfg, eval_patch_size=64)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert all(0.0 <= r["val_dice"] <= 1.0 for r in history)

    test_images, test_masks = _three_class_data(2, seed=3)
    bundle["metadata"]["fold"] = 0
    preds, per_image, summary, _ = evaluate_models(
        {"sa2net-fold0": bundle}, {"images": test_images, "masks": test_masks},
        {"name": "sa2net"}, {"patch_size": 64, "device": "cpu"})
    assert {"dice_class_1", "dice_class_2", "iou_class_1", "iou_class_2"} <= set(per_image)
    assert set(np.unique(np.concatenate([p.ravel() for p in preds.values()]))) <= {0, 1, 2}
    row = per_image.iloc[0]
    assert row["dice"] == pytest.approx((row["dice_class_1"] + row["dice_class_2"]) / 2)
    assert 0.0 <= summary["test_dice"] <= 1.0
