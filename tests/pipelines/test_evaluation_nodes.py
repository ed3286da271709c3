"""Per-image scoring of the test set."""

import numpy as np
import pytest

from sa2_pipeline.pipelines.evaluation.nodes import frozen_test_set_id, score_test_set


def test_scores_per_image_and_summary():
    truth = {"a": np.array([[1, 1], [0, 0]], np.uint8), "b": np.array([[1, 0], [0, 0]], np.uint8)}
    preds = {"a": np.array([[1, 0], [0, 0]], np.uint8), "b": np.array([[1, 0], [0, 0]], np.uint8)}
    bundle = {"init_kwargs": {"num_classes": 1}}
    per_image, summary, mlflow_metrics = score_test_set(preds, {"masks": truth}, bundle)
    row = per_image.set_index("id")
    assert row.loc["a", "dice"] == pytest.approx(2 / 3, abs=1e-4)
    assert row.loc["a", "iou"] == pytest.approx(0.5, abs=1e-4)
    assert row.loc["b", "dice"] == pytest.approx(1.0, abs=1e-4)
    assert summary["test_dice"] == pytest.approx((2 / 3 + 1) / 2, abs=1e-4)
    assert summary["n_images"] == 2
    assert mlflow_metrics["test_dice"] == {"value": summary["test_dice"], "step": 0}
    assert summary["test_set_id"] == frozen_test_set_id({"masks": truth})


def test_missing_prediction_is_an_error():
    truth = {"a": np.zeros((2, 2), np.uint8)}
    with pytest.raises(KeyError, match="without a prediction"):
        score_test_set({}, {"masks": truth}, {"init_kwargs": {}})


def test_frozen_test_set_id_changes_with_the_masks():
    masks = {"a": np.zeros((2, 2), np.uint8)}
    changed = {"a": np.ones((2, 2), np.uint8)}
    assert frozen_test_set_id({"masks": masks}) != frozen_test_set_id({"masks": changed})
