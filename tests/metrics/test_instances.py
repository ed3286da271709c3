"""Object metrics and instance extraction on label images worked out by hand.

Layout used throughout (rows 0-3 of a 6 x 12 image):

    truth A = columns 0-4 (4 x 5 = 20 px), truth B = columns 5-7 (4 x 3 = 12 px), touching;
    their union is the 4 x 8 = 32 px block.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from sa2_pipeline.config import InstanceConfig
from sa2_pipeline.metrics.instances import (
    aji,
    extract_instances,
    instance_scores,
    panoptic_quality,
)


def _labels(*blocks: tuple[int, int]) -> np.ndarray:
    image = np.zeros((6, 12), dtype=np.int32)
    for label, (start, stop) in enumerate(blocks, start=1):
        image[0:4, start:stop] = label
    return image


TOUCHING = _labels((0, 5), (5, 8))  # A (20 px), B (12 px)
BLOCK = _labels((0, 8))  # one 32 px object


def test_two_touching_nuclei_predicted_merged():
    # IoU(A, P) = 20/32 = 0.625 > 0.5: a TP; IoU(B, P) = 12/32 = 0.375: B is a FN; no FP.
    s = instance_scores(TOUCHING, BLOCK)
    assert s["dq"] == pytest.approx(1 / (1 + 0.5))  # TP / (TP + FP/2 + FN/2) = 2/3
    assert s["sq"] == pytest.approx(0.625)
    assert s["pq"] == pytest.approx(0.625 / 1.5)  # 0.41667
    assert s["obj_precision"] == 1.0 and s["obj_recall"] == 0.5
    assert s["obj_f1"] == pytest.approx(2 / 3)
    # AJI: A and B both pick P. C = 20 + 12, U = 32 + 32 (the merged object counts twice).
    assert s["aji"] == pytest.approx(32 / 64)
    assert (s["n_true_objects"], s["n_pred_objects"]) == (2, 1)


def test_split_nucleus():
    # Truth: the 32 px block. Prediction: P1 = A's 20 px, P2 = B's 12 px.
    # IoU(T, P1) = 0.625 -> TP; P2 (0.375) is a FP; no FN.
    s = instance_scores(BLOCK, TOUCHING)
    assert s["dq"] == pytest.approx(2 / 3) and s["sq"] == pytest.approx(0.625)
    assert s["pq"] == pytest.approx(0.625 / 1.5)
    assert s["obj_precision"] == 0.5 and s["obj_recall"] == 1.0
    # AJI: T pairs with P1 (C = 20, union 32); P2 is never paired and adds 12: 20 / 44.
    assert s["aji"] == pytest.approx(20 / 44)


def test_empty_prediction():
    s = instance_scores(TOUCHING, np.zeros_like(TOUCHING))
    assert s["aji"] == 0.0  # C = 0, U = 20 + 12
    assert (s["pq"], s["dq"], s["obj_f1"], s["obj_recall"]) == (0.0, 0.0, 0.0, 0.0)
    assert math.isnan(s["sq"]) and math.isnan(s["obj_precision"])  # no TP, no prediction


def test_empty_truth():
    s = instance_scores(np.zeros_like(BLOCK), BLOCK)
    assert s["aji"] == 0.0  # C = 0, U = |P| = 32
    assert (s["pq"], s["dq"], s["obj_f1"], s["obj_precision"]) == (0.0, 0.0, 0.0, 0.0)
    assert math.isnan(s["sq"]) and math.isnan(s["obj_recall"])


def test_both_empty_and_perfect_score_one():
    empty = np.zeros((6, 12), dtype=np.int32)
    assert set(instance_scores(empty, empty).values()) == {1.0, 0.0}  # metrics 1, counts 0
    perfect = instance_scores(TOUCHING, TOUCHING * 7)  # ids need not agree
    assert all(perfect[k] == 1.0 for k in ("aji", "pq", "dq", "sq", "obj_f1"))


def test_iou_of_exactly_one_half_is_not_a_match():
    truth = _labels((0, 4))  # 16 px
    pred = _labels((0, 8))  # 32 px, IoU = 0.5
    assert panoptic_quality(truth, pred)["dq"] == 0.0
    assert aji(truth, pred) == pytest.approx(16 / 32)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differs"):
        aji(np.zeros((2, 2)), np.zeros((3, 3)))


def _two_discs() -> np.ndarray:
    yy, xx = np.mgrid[0:40, 0:60]
    left = (yy - 20) ** 2 + (xx - 20) ** 2 <= 10**2
    right = (yy - 20) ** 2 + (xx - 36) ** 2 <= 10**2
    return (left | right).astype(np.float32)


def test_watershed_splits_touching_discs_components_do_not():
    mask = _two_discs()
    assert extract_instances(mask, InstanceConfig(method="components")).max() == 1
    labels = extract_instances(mask, InstanceConfig(method="watershed", min_distance=5))
    assert labels.max() == 2
    assert labels[20, 15] != labels[20, 41]


def test_threshold_and_min_size():
    probability = np.zeros((20, 20), dtype=np.float32)
    probability[2:8, 2:8] = 0.9  # 36 px
    probability[12:14, 12:14] = 0.9  # 4 px
    probability[12:18, 2:8] = 0.4  # below the threshold
    labels = extract_instances(probability, InstanceConfig(min_size=5))
    assert labels.max() == 1 and np.count_nonzero(labels) == 36
    assert extract_instances(probability, InstanceConfig(min_size=0)).max() == 2
    assert extract_instances(probability, InstanceConfig(min_size=5), threshold=0.3).max() == 2


def test_bad_parameters_are_rejected():
    with pytest.raises(ValueError, match="method"):
        InstanceConfig(method="magic")
    with pytest.raises(ValueError, match="min_distance"):
        InstanceConfig(min_distance=0)


def test_mask_instances_labels_each_saved_mask():
    from sa2_pipeline.metrics.instances import mask_instances

    mask = np.zeros((12, 12), np.uint8)
    mask[1:5, 1:5] = 1
    mask[7:11, 7:11] = 2  # any nonzero label is foreground
    labels = mask_instances({"a": mask, "b": np.zeros_like(mask)},
                            InstanceConfig(method="components", min_size=0))
    assert labels["a"].max() == 2 and labels["b"].max() == 0
    assert mask_instances({"a": mask}, InstanceConfig(min_size=17))["a"].max() == 0
