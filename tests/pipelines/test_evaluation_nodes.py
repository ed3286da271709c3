"""Scoring of every fold model and of each model's fold ensemble on the test set."""

import numpy as np
import pytest
import torch

from sa2_pipeline.inference.predict import Predictor
from sa2_pipeline.metrics.summary import frozen_test_set_id
from sa2_pipeline.models import create_model
from sa2_pipeline.models.bundle import make_bundle
from sa2_pipeline.pipelines.evaluation.nodes import evaluate_models


def _bundle(seed: int, fold: int, resize_to=None, name="unet"):
    torch.manual_seed(seed)
    model = create_model(name, base_channels=4)
    bundle = make_bundle(model_name=name, init_kwargs=model.init_kwargs,
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


def _with_instances():
    """Two test images, each with three true square nuclei (two of them touching)."""
    rng = np.random.default_rng(3)
    instances = np.zeros((40, 36), np.uint16)
    instances[4:14, 4:14], instances[4:14, 14:24], instances[24:34, 8:18] = 1, 2, 3
    return {"images": {i: rng.integers(0, 255, (40, 36, 3), dtype=np.uint8) for i in "ab"},
            "masks": {i: (instances > 0).astype(np.uint8) for i in "ab"},
            "instances": {i: instances for i in "ab"}}


def test_object_and_boundary_metrics_with_intervals():
    test = _with_instances()
    params = {"patch_size": 32, "device": "cpu", "threshold": 0.01, "bootstrap_resamples": 999}
    _, per_image, summary, flat = evaluate_models(
        {"unet-fold0": _bundle(1, 0)}, test, {"name": "unet"}, params)
    assert {"aji", "pq", "dq", "sq", "obj_f1", "hd95", "boundary_f1",
            "n_true_objects", "n_pred_objects"} <= set(per_image.columns)
    assert set(per_image["n_true_objects"]) == {3.0}
    assert (per_image["n_pred_objects"] >= 1).all()  # threshold 0.01: nearly all foreground
    intervals = summary["models"]["unet"]["intervals"]
    assert intervals["aji"]["n"] == 2 and intervals["dice"]["n"] == 2
    assert summary["test_aji"] == pytest.approx(per_image["aji"].mean())
    assert "n_true_objects" not in intervals  # counts are not summarised
    assert "test_pq_ci_low" in summary and "unet.fold0.aji" in flat
    # A user setting reaches the extraction: objects under 10^6 px are all dropped.
    params["instances"] = {"min_size": 10**6}
    _, dropped, _, _ = evaluate_models({"unet-fold0": _bundle(1, 0)}, test, {"name": "unet"},
                                       params)
    assert (dropped["n_pred_objects"] == 0).all() and (dropped["aji"] == 0).all()


def test_no_instance_maps_means_no_object_columns():
    test = _with_instances()
    del test["instances"]
    _, per_image, summary, _ = evaluate_models(
        {"unet-fold0": _bundle(1, 0)}, test, {"name": "unet"},
        {"patch_size": 32, "device": "cpu", "bootstrap_resamples": 999})
    assert "aji" not in per_image.columns and "hd95" in per_image.columns
    assert "aji" not in summary["models"]["unet"]["intervals"]


def test_primary_is_compared_with_each_baseline():
    test = _with_instances()
    models = {"sa2net-fold0": _bundle(1, 0, name="sa2net"), "unet-fold0": _bundle(2, 0)}
    _, per_image, summary, _ = evaluate_models(
        models, test, {"name": "sa2net"},
        {"patch_size": 32, "device": "cpu", "bootstrap_resamples": 999})
    assert list(summary["comparisons"]) == ["unet"]
    comparison = summary["comparisons"]["unet"]["dice"]
    a = per_image[per_image.model == "sa2net"].set_index("id")["dice"]
    b = per_image[per_image.model == "unet"].set_index("id")["dice"]
    assert comparison["n"] == 2
    assert comparison["delta"] == pytest.approx((a - b).mean())


def test_evaluation_precision_is_a_parameter_that_changes_the_prediction():
    from sa2_pipeline.config import ConfigError

    rng = np.random.default_rng(2)
    test = {"images": {i: rng.integers(0, 255, (48, 40, 3), dtype=np.uint8) for i in "ab"},
            "masks": {i: (rng.random((48, 40)) > 0.5).astype(np.uint8) for i in "ab"}}
    models = {"unet-fold0": _bundle(3, 0)}
    # Threshold at the median fp32 probability, so half the pixels sit near it.
    probs = Predictor(list(models.values()), patch_size=32).probabilities(test["images"]["a"])
    params = {"patch_size": 32, "device": "cpu", "threshold": float(np.median(probs)),
              "bootstrap_resamples": 999}

    def predict(**extra):
        return evaluate_models(models, test, {"name": "unet"}, {**params, **extra})[0]

    default, fp32, bf16 = predict(), predict(precision="fp32"), predict(precision="bf16")
    for i in "ab":  # the default is fp32
        np.testing.assert_array_equal(default[i], fp32[i])
    changed = sum(int((bf16[i] != fp32[i]).sum()) for i in "ab")
    assert 0 < changed < 0.2 * 2 * 48 * 40  # bf16 moves some pixels across the threshold
    with pytest.raises(ConfigError, match="precision"):
        predict(precision="fp64")
