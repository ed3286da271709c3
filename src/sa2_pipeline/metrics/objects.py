"""One image's boundary and object scores, per class for multi-class label masks.

Column names (docs/metrics.md): ``hd95`` and ``boundary_f1`` always; ``aji``, ``pq``, ``dq``,
``sq``, ``obj_precision``, ``obj_recall``, ``obj_f1``, ``n_true_objects`` and
``n_pred_objects`` only when the image's true instance map is given (datasets without
instance labels get no object columns: nothing is faked). Multi-class masks get each metric
per foreground class (``aji_class_2``...) and the plain name is their mean (NaNs skipped).
"""

from __future__ import annotations

import numpy as np

from sa2_pipeline.config import EvaluationConfig, InstanceConfig, PredictionConfig
from sa2_pipeline.metrics.boundary import boundary_scores
from sa2_pipeline.metrics.instances import extract_instances, instance_scores

__all__ = ["object_scores"]

_COUNTS = ("n_true_objects", "n_pred_objects")


def _class_scores(pred_k, truth_k, truth_inst_k, extract_from, cut, tolerance):
    scores = boundary_scores(pred_k, truth_k, tolerance)
    if truth_inst_k is not None:
        scores.update(instance_scores(truth_inst_k, extract_instances(extract_from, *cut)))
    return scores


def object_scores(
    pred: np.ndarray,
    truth: np.ndarray,
    num_classes: int,
    truth_instances: np.ndarray | None = None,
    probability: np.ndarray | None = None,
    cfg: InstanceConfig | None = None,
    tolerance: float = EvaluationConfig.boundary_tolerance,
    threshold: float = PredictionConfig.threshold,
) -> dict[str, float]:
    """Boundary and (with ``truth_instances``) object metrics of one predicted label mask.

    Args:
        pred: Predicted label mask ``(H, W)`` (binary {0, 1} or class indices).
        truth: True label mask, same shape.
        num_classes: 1 (binary) or the number of classes including background.
        truth_instances: True instance ids ``(H, W)`` (0 = background), or ``None``.
        probability: Binary only: the foreground probability map the prediction came from;
            instances are cut out of it at ``threshold`` (else out of ``pred``).
        cfg: How objects are cut out (``evaluation.instances``).
        tolerance: Boundary F1 tolerance in pixels.
        threshold: The foreground threshold the prediction was made with.

    Returns:
        Metric name -> value (see the module docstring).
    """
    cut = (cfg or InstanceConfig(), threshold)
    pred, truth = np.asarray(pred), np.asarray(truth)
    if truth_instances is not None and np.shape(truth_instances) != truth.shape:
        raise ValueError(
            f"instance map shape {np.shape(truth_instances)} differs from mask {truth.shape}"
        )
    if num_classes <= 1:
        source = probability if probability is not None else (pred > 0).astype(np.float32)
        return _class_scores(pred > 0, truth > 0, truth_instances, source, cut, tolerance)
    per_class: dict[str, float] = {}
    by_metric: dict[str, list[float]] = {}
    for k in range(1, num_classes):
        truth_k = truth == k
        inst_k = None if truth_instances is None else np.where(truth_k, truth_instances, 0)
        scores = _class_scores(
            pred == k, truth_k, inst_k, (pred == k).astype(np.float32), cut, tolerance
        )
        for name, value in scores.items():
            per_class[f"{name}_class_{k}"] = value
            by_metric.setdefault(name, []).append(value)
    result: dict[str, float] = {}
    for name, values in by_metric.items():
        finite = [v for v in values if not np.isnan(v)]
        if name in _COUNTS:
            result[name] = float(sum(values))
        else:
            result[name] = float(np.mean(finite)) if finite else float("nan")
    return {**result, **per_class}
