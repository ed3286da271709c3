"""The test-set summary: fold mean +- std, the final member, flat metrics, the test-set id."""

import numpy as np
import pandas as pd
import pytest

from sa2_pipeline.metrics.summary import (
    flat_metrics,
    frozen_test_set_id,
    primary_rows,
    summarise_test_set,
)


def test_summary_reports_fold_mean_std_and_the_ensemble():
    rows = []
    for member, scores in (("fold0", (0.6, 0.8)), ("fold1", (0.8, 1.0)), ("ensemble", (0.9, 0.9))):
        for image_id, d in zip(("a", "b"), scores, strict=True):
            rows.append({"model": "sa2net", "member": member, "id": image_id, "dice": d})
    rows += [{"model": "unet", "member": "fold0", "id": i, "dice": 0.5} for i in ("a", "b")]
    summary = summarise_test_set(pd.DataFrame(rows), "sa2net")
    sa2 = summary["models"]["sa2net"]
    assert sa2["fold_mean"]["dice"] == pytest.approx(0.8)      # folds 0.7 and 0.9
    assert sa2["fold_std"]["dice"] == pytest.approx(0.1)
    assert sa2["final_member"] == "ensemble" and sa2["final"]["dice"] == pytest.approx(0.9)
    assert summary["test_dice"] == pytest.approx(0.9)           # the gate scores the ensemble
    assert summary["models"]["unet"]["final_member"] == "fold0"


def test_frozen_test_set_id_changes_with_the_masks():
    masks = {"a": np.zeros((2, 2), np.uint8)}
    changed = {"a": np.ones((2, 2), np.uint8)}
    assert frozen_test_set_id({"masks": masks}) != frozen_test_set_id({"masks": changed})


def test_flat_metrics_and_primary_rows():
    rows = [{"model": "sa2net", "member": m, "id": i, "dice": d}
            for m, d in (("fold0", 0.5), ("fold1", 0.7), ("ensemble", 0.8)) for i in "ab"]
    per_image = pd.DataFrame(rows)
    summary = summarise_test_set(per_image, "sa2net")
    flat = flat_metrics(summary)
    assert flat["test_dice"] == {"value": pytest.approx(0.8), "step": 0}
    assert flat["sa2net.fold1.dice"]["value"] == pytest.approx(0.7)
    assert flat["sa2net.folds.dice_mean"]["value"] == pytest.approx(0.6)
    assert flat["sa2net.folds.dice_std"]["value"] == pytest.approx(0.1)
    final = primary_rows(per_image, summary)
    assert list(final.columns) == ["id", "dice"] and final["dice"].tolist() == [0.8, 0.8]
