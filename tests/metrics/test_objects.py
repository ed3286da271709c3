"""Per-image object and boundary scores: which columns exist, and the per-class means."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sa2_pipeline.metrics.objects import object_scores


def _scene() -> tuple[np.ndarray, np.ndarray]:
    """Class mask and instance map: a class-1 object (ids 1) and a class-2 object (id 2)."""
    classes = np.zeros((16, 16), dtype=np.uint8)
    instances = np.zeros((16, 16), dtype=np.int32)
    classes[2:6, 2:6], instances[2:6, 2:6] = 1, 1
    classes[9:13, 9:13], instances[9:13, 9:13] = 2, 2
    return classes, instances


def test_no_instance_map_means_no_object_columns():
    classes, _ = _scene()
    binary = (classes > 0).astype(np.uint8)
    scores = object_scores(binary, binary, 1)
    assert scores == {"hd95": 0.0, "boundary_f1": 1.0}


def test_binary_with_instances():
    classes, instances = _scene()
    binary = (classes > 0).astype(np.uint8)
    pred = binary.copy()
    pred[9:13, 9:13] = 0  # the second object is missed
    scores = object_scores(pred, binary, 1, truth_instances=instances)
    # One of two objects found exactly: TP 1, FN 1 -> DQ = 1 / 1.5, SQ = 1, recall 1/2.
    assert scores["dq"] == pytest.approx(2 / 3) and scores["sq"] == 1.0
    assert scores["obj_recall"] == 0.5 and scores["obj_precision"] == 1.0
    assert scores["aji"] == pytest.approx(16 / 32)  # C = 16, U = 16 + 16 (the missed one)
    assert (scores["n_true_objects"], scores["n_pred_objects"]) == (2, 1)


def test_binary_instances_come_from_the_probability_at_its_threshold():
    classes, instances = _scene()
    binary = (classes > 0).astype(np.uint8)
    probability = binary * np.float32(0.6)
    low = object_scores(binary, binary, 1, instances, probability, threshold=0.5)
    high = object_scores(binary, binary, 1, instances, probability, threshold=0.7)
    assert low["n_pred_objects"] == 2 and high["n_pred_objects"] == 0


def test_multi_class_means_over_classes():
    classes, instances = _scene()
    pred = classes.copy()
    pred[9:13, 9:13] = 0  # class 2 missed entirely
    scores = object_scores(pred, classes, 3, truth_instances=instances)
    assert scores["aji_class_1"] == 1.0 and scores["aji_class_2"] == 0.0
    assert scores["aji"] == 0.5 and scores["pq"] == 0.5
    # Class 2 has no predicted boundary: its HD95 is undefined and left out of the mean.
    assert math.isnan(scores["hd95_class_2"]) and scores["hd95"] == 0.0
    assert scores["boundary_f1"] == 0.5  # (1 + 0) / 2
    assert scores["n_true_objects"] == 2


def test_instance_map_shape_is_checked():
    classes, _ = _scene()
    with pytest.raises(ValueError, match="instance map shape"):
        object_scores(classes, classes, 3, truth_instances=np.zeros((4, 4)))
