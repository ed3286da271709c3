"""Scoring of every fold model and of each model's fold ensemble on the test set."""

import numpy as np
import pandas as pd
import pytest
import torch

from sa2_pipeline.inference.predict import Predictor
from sa2_pipeline.models import create_model
from sa2_pipeline.models.bundle import make_bundle
from sa2_pipeline.pipelines.evaluation.nodes import (
    _summarise,
    evaluate_models,
    frozen_test_set_id,
)


def test_summary_reports_fold_mean_std_and_the_ensemble():
    rows = []
    for member, scores in (("fold0", (0.6, 0.8)), ("fold1", (0.8, 1.0)), ("ensemble", (0.9, 0.9))):
        for image_id, d in zip(("a", "b"), scores, strict=True):
            rows.append({"model": "sa2net", "member": member, "id": image_id, "dice": d})
    rows += [{"model": "unet", "member": "fold0", "id": i, "dice": 0.5} for i in ("a", "b")]
    summary = _summarise(pd.DataFrame(rows), "sa2net")
    sa2 = summary["models"]["sa2net"]
    assert sa2["fold_mean"]["dice"] == pytest.approx(0.8)      # folds 0.7 and 0.9
    assert sa2["fold_std"]["dice"] == pytest.approx(0.1)
    assert sa2["final_member"] == "ensemble" and sa2["final"]["dice"] == pytest.approx(0.9)
    assert summary["test_dice"] == pytest.approx(0.9)           # the gate scores the ensemble
    assert summary["models"]["unet"]["final_member"] == "fold0"


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


def test_frozen_test_set_id_changes_with_the_masks():
    masks = {"a": np.zeros((2, 2), np.uint8)}
    changed = {"a": np.ones((2, 2), np.uint8)}
    assert frozen_test_set_id({"masks": masks}) != frozen_test_set_id({"masks": changed})
