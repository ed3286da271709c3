"""Object-level metrics for nuclei: instance extraction, AJI, PQ/DQ/SQ, object F1.

Definitions (see docs/metrics.md), all on label images where 0 is background and every
other id is one object:

* **Matching for PQ and object F1** (Kirillov et al. 2019, *Panoptic Segmentation*): a true
  object and a predicted object match when their IoU is > 0.5; such a match is unique
  because two objects cannot both overlap one object by more than half of their union.
  ``TP`` = matched pairs, ``FP`` = unmatched predictions, ``FN`` = unmatched true objects.
* ``DQ = TP / (TP + FP/2 + FN/2)`` (equal to object F1), ``SQ = mean IoU of the TP pairs``,
  ``PQ = sum of TP IoUs / (TP + FP/2 + FN/2) = DQ * SQ``.
* Object ``precision = TP / (TP + FP)``, ``recall = TP / (TP + FN)``,
  ``f1 = 2 TP / (2 TP + FP + FN)``. The brief's "IoU >= 0.5" and PQ's "> 0.5" differ only for
  an IoU of exactly one half; we use the strict ``> 0.5`` that makes matching unique.
* **AJI** (Kumar et al. 2017, as implemented in HoVer-Net's ``get_fast_aji``): each true
  object ``G_i`` is paired with the prediction ``S_j`` of highest IoU among those overlapping
  it; ``AJI = sum |G_i ∩ S_j| / (sum |G_i ∪ S_j| + sum |S_k| over predictions never paired)``;
  a true object overlapping no prediction adds ``|G_i|`` to the denominator.

Undefined cases (never faked): both images empty score 1.0 everywhere (a correct "nothing
here", the project's Dice convention); otherwise a ratio whose denominator is zero is NaN:
``precision`` with no prediction, ``recall`` with no true object, ``SQ`` with no TP. ``AJI``,
``PQ``, ``DQ`` and ``f1`` are defined (0.0) as soon as either side has an object.

No library in the pinned stack computes AJI or PQ; overlaps come from numpy, labelling and
watershed from scikit-image and scipy.ndimage.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from sa2_pipeline.config import InstanceConfig, PredictionConfig, check_threshold

__all__ = [
    "aji",
    "extract_instances",
    "instance_scores",
    "mask_instances",
    "match_instances",
    "panoptic_quality",
]

OBJECT_METRICS = ("aji", "pq", "dq", "sq", "obj_precision", "obj_recall", "obj_f1")


def extract_instances(probability: np.ndarray, cfg: InstanceConfig | None = None,
                      threshold: float = PredictionConfig.threshold) -> np.ndarray:
    """Label image of the objects in a foreground probability map (or a binary mask).

    Args:
        probability: ``(H, W)`` foreground probability in [0, 1], or a 0/1 mask.
        cfg: How objects are cut out (``evaluation.instances``; default its defaults).
        threshold: Foreground where the probability is above it.

    Returns:
        ``(H, W)`` int32 labels ``0..N`` (0 = background), numbered consecutively.
    """
    from scipy import ndimage
    from skimage.feature import peak_local_max
    from skimage.measure import label
    from skimage.segmentation import relabel_sequential, watershed

    params = cfg or InstanceConfig()
    threshold = check_threshold(threshold)
    probability = np.asarray(probability)
    if probability.ndim != 2:
        raise ValueError(f"probability map must be (H, W), got shape {probability.shape}")
    foreground = probability > threshold
    components = label(foreground, connectivity=params.connectivity)
    if params.method == "watershed" and components.max() > 0:
        distance = ndimage.distance_transform_edt(foreground)
        peaks = peak_local_max(
            distance, min_distance=params.min_distance, labels=components, exclude_border=False
        )
        seeds = np.zeros(foreground.shape, dtype=bool)
        seeds[tuple(peaks.T)] = True
        # Neighbouring peaks on one plateau become one seed.
        markers = label(seeds, connectivity=2)
        components = watershed(
            -distance, markers, mask=foreground, connectivity=params.connectivity
        )
    if params.min_size > 0:
        sizes = np.bincount(components.ravel())
        small = np.flatnonzero(sizes < params.min_size)
        components[np.isin(components, small[small > 0])] = 0
    return relabel_sequential(components.astype(np.int32))[0]


def mask_instances(
    masks: Mapping[str, np.ndarray], cfg: InstanceConfig | None = None
) -> dict[str, np.ndarray]:
    """:func:`extract_instances` of saved label masks (nonzero = foreground), by id."""
    return {i: extract_instances((m > 0).astype(np.float32), cfg) for i, m in masks.items()}


def _overlaps(truth: np.ndarray, pred: np.ndarray):
    """Areas and pairwise intersections of two label images (ids made consecutive)."""
    from skimage.segmentation import relabel_sequential

    truth = relabel_sequential(np.asarray(truth).astype(np.int64))[0]
    pred = relabel_sequential(np.asarray(pred).astype(np.int64))[0]
    n_true, n_pred = int(truth.max(initial=0)), int(pred.max(initial=0))
    true_area = np.bincount(truth.ravel(), minlength=n_true + 1)[1:]
    pred_area = np.bincount(pred.ravel(), minlength=n_pred + 1)[1:]
    both = (truth > 0) & (pred > 0)
    codes, counts = np.unique(truth[both] * (n_pred + 1) + pred[both], return_counts=True)
    t_idx, p_idx = codes // (n_pred + 1) - 1, codes % (n_pred + 1) - 1
    inter = np.zeros((n_true, n_pred), dtype=np.int64)
    inter[t_idx, p_idx] = counts
    union = true_area[:, None] + pred_area[None, :] - inter
    iou = np.divide(inter, union, out=np.zeros(inter.shape), where=union > 0)
    return true_area, pred_area, inter, iou


def match_instances(truth: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Unique pairs of true and predicted objects with IoU > 0.5.

    Returns:
        ``(ious, n_true, n_pred)``: the IoU of every matched pair, and the object counts.
    """
    if np.shape(truth) != np.shape(pred):
        raise ValueError(f"truth shape {np.shape(truth)} differs from prediction {np.shape(pred)}")
    true_area, pred_area, _, iou = _overlaps(truth, pred)
    return iou[iou > 0.5], int(true_area.size), int(pred_area.size)


def panoptic_quality(truth: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """PQ, DQ, SQ and object precision/recall/F1 of two label images (module docstring)."""
    ious, n_true, n_pred = match_instances(truth, pred)
    if n_true == 0 and n_pred == 0:
        return dict.fromkeys(("pq", "dq", "sq", "obj_precision", "obj_recall", "obj_f1"), 1.0)
    tp = int(ious.size)
    fp, fn = n_pred - tp, n_true - tp
    nan = float("nan")
    dq = tp / (tp + 0.5 * fp + 0.5 * fn)
    return {
        "pq": float(ious.sum() / (tp + 0.5 * fp + 0.5 * fn)),
        "dq": float(dq),
        "sq": float(ious.mean()) if tp else nan,
        "obj_precision": tp / n_pred if n_pred else nan,
        "obj_recall": tp / n_true if n_true else nan,
        "obj_f1": float(2 * tp / (2 * tp + fp + fn)),
    }


def aji(truth: np.ndarray, pred: np.ndarray) -> float:
    """Aggregated Jaccard Index (Kumar et al. 2017; module docstring)."""
    if np.shape(truth) != np.shape(pred):
        raise ValueError(f"truth shape {np.shape(truth)} differs from prediction {np.shape(pred)}")
    true_area, pred_area, inter, iou = _overlaps(truth, pred)
    if true_area.size == 0 and pred_area.size == 0:
        return 1.0
    intersection = union = 0
    used = np.zeros(pred_area.size, dtype=bool)
    for i in range(true_area.size):
        if pred_area.size == 0 or inter[i].max() == 0:
            union += int(true_area[i])
            continue
        j = int(np.argmax(iou[i]))
        used[j] = True
        intersection += int(inter[i, j])
        union += int(true_area[i] + pred_area[j] - inter[i, j])
    union += int(pred_area[~used].sum())
    return float(intersection / union)


def instance_scores(truth: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """All object metrics of one image: ``aji``, ``pq``, ``dq``, ``sq``, ``obj_*``, counts."""
    scores = {"aji": aji(truth, pred), **panoptic_quality(truth, pred)}
    scores["n_true_objects"] = float(len(np.unique(truth[truth > 0])))
    scores["n_pred_objects"] = float(len(np.unique(pred[pred > 0])))
    return scores
