"""Scoring of every fold model and of each model's fold ensemble on the test set."""

import numpy as np
import pytest
import torch

from sa2_pipeline.inference.predict import Predictor
from sa2_pipeline.metrics.summary import frozen_test_set_id
from sa2_pipeline.models import create_model
from sa2_pipeline.models.bundle import make_bundle
from sa2_pipeline.pipelines.evaluation.nodes import evaluate_models


def _bundle(seed: int, fold: int, resize_to=None):
    torch.manual_seed(seed)
    model = create_model("unet", base_channels=4)
    bundle = make_bundle(model_name="unet", init_kwargs=model.init_kwargs,
                         state_dict=model.state_dict(), patch_size=32, resize_to=resize_to,
                         metadata={"fold": fold})
    return bundle


def test_evaluate_models_scores_members_and_their_ensemble():
    rng = np.random.default_rng(0)
    test = {"images": {i: rng.integers(0, 255, (40, 36, 3), dtype=np.uint8) for i in "ab"},
            "masks": {i: (rng.random((40, 36)) > 0.5).astype(np.uint8) for i in "ab"}}
    models = {"unet-fold0": _bundle(1, 0), "unet-fold1": _bundle(2, 1)}
    preds, per_image, summary, flat = evaluate_models(
        models, test, {"name": "unet"}, {"patch_size": 32, "device": "cpu"})
    assert len(per_image) == 2 * 3  # images x (2 folds + ensemble)
    assert set(per_image["member"]) == {"fold0", "fold1", "ensemble"}
    members = Predictor(list(models.values()), patch_size=32)
    for image_id in "ab":
        expected = (members.probabilities(test["images"][image_id])[0] > 0.5).astype(np.uint8)
        np.testing.assert_array_equal(preds[image_id], expected)
    assert summary["test_set_id"] == frozen_test_set_id(test)
    assert flat["unet.ensemble.dice"]["value"] == pytest.approx(summary["test_dice"])


def test_resize_mode_models_are_also_scored_on_resized_masks():
    rng = np.random.default_rng(1)
    test = {"images": {"a": rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)},
            "masks": {"a": (rng.random((50, 70)) > 0.5).astype(np.uint8)}}
    preds, per_image, summary, _ = evaluate_models(
        {"unet-fold0": _bundle(1, 0, resize_to=32)}, test, {"name": "unet"},
        {"patch_size": 32, "device": "cpu"})
    assert {"dice", "iou", "dice_32", "iou_32"} <= set(per_image.columns)
    assert preds["a"].shape == (50, 70)
    assert "test_dice_32" in summary


def test_missing_primary_model_is_an_error():
    with pytest.raises(KeyError, match="no trained model named 'sa2net'"):
        evaluate_models({"unet-fold0": _bundle(1, 0)}, {"images": {}, "masks": {}},
                        {"name": "sa2net"}, {})
