"""Intervals per metric column and paired model comparisons on a per-image table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sa2_pipeline.metrics.comparison import compare_models, intervals, metric_columns


def _frame(model: str, dice: list[float], hd95: list[float]) -> pd.DataFrame:
    ids = [f"img{i}" for i in range(len(dice))]
    return pd.DataFrame(
        {
            "model": model,
            "member": "fold0",
            "id": ids,
            "dice": dice,
            "hd95": hd95,
            "n_true_objects": 3.0,
        }
    )


def test_metric_columns_skip_keys_and_counts():
    assert metric_columns(_frame("a", [0.5], [1.0])) == ["dice", "hd95"]


def test_intervals_count_only_defined_values():
    frame = _frame("a", [0.2, 0.4, 0.6], [1.0, np.nan, 3.0])
    ci = intervals(frame, ["dice", "hd95"])
    assert ci["dice"]["n"] == 3 and ci["dice"]["estimate"] == pytest.approx(0.4)
    assert ci["dice"]["low"] < 0.4 < ci["dice"]["high"]
    assert ci["hd95"]["n"] == 2 and ci["hd95"]["estimate"] == 2.0


def test_pairs_follow_image_ids_not_row_order():
    a = _frame("sa2net", [0.9, 0.8, 0.7, 0.6], [1.0, 1.0, 1.0, 1.0])
    b = _frame("unet", [0.8, 0.7, 0.6, 0.5], [2.0, 2.0, 2.0, 2.0]).iloc[::-1]
    result = compare_models(a, b, ["dice", "hd95"])
    # Every image improves Dice by exactly 0.1 once rows are paired by id.
    assert result["dice"]["delta"] == pytest.approx(0.1)
    assert result["dice"]["delta_low"] == pytest.approx(0.1)
    assert result["dice"]["n"] == 4 and result["dice"]["higher_is_better"]
    assert result["hd95"]["delta"] == -1.0 and not result["hd95"]["higher_is_better"]


def test_disjoint_images_are_an_error():
    a = _frame("a", [0.5], [1.0])
    b = _frame("b", [0.5], [1.0]).assign(id="other")
    with pytest.raises(ValueError, match="share no test image"):
        compare_models(a, b, ["dice"])


def test_add_uncertainty_to_an_evaluation_summary():
    a = _frame("sa2net", [0.9, 0.8, 0.7, 0.6], [1.0, 1.0, 1.0, 1.0]).assign(member="ensemble")
    b = _frame("unet", [0.8, 0.7, 0.6, 0.5], [2.0, 2.0, 2.0, 2.0])
    per_image = pd.concat([a, a.assign(member="fold0", dice=0.0), b], ignore_index=True)
    summary = {
        "primary_model": "sa2net",
        "models": {"sa2net": {"final_member": "ensemble"}, "unet": {"final_member": "fold0"}},
    }
    from sa2_pipeline.metrics.comparison import add_uncertainty

    add_uncertainty(summary, per_image, n_resamples=999)
    # The ensemble rows, not fold0's zeros, are the primary model's final scores.
    assert summary["models"]["sa2net"]["intervals"]["dice"]["estimate"] == pytest.approx(0.75)
    assert summary["test_dice_n"] == 4
    assert summary["test_dice_ci_low"] < 0.75 < summary["test_dice_ci_high"]
    assert list(summary["comparisons"]) == ["unet"]
    assert summary["comparisons"]["unet"]["dice"]["delta"] == pytest.approx(0.1)
