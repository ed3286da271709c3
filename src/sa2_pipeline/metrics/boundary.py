"""Boundary metrics: 95th-percentile Hausdorff distance and boundary F1 at a tolerance.

Definitions (see docs/metrics.md), in pixels, on binary masks (one class at a time):

* The **boundary** of a mask is its set of foreground pixels with a background 4-neighbour
  (``skimage.segmentation.find_boundaries(mode="inner")``; the image edge is not a boundary).
* Directed distances ``d(A→B)``: for every boundary pixel of A, the Euclidean distance to the
  nearest boundary pixel of B (``scipy.ndimage.distance_transform_edt``).
* **HD95** = ``max(P95 d(P→T), P95 d(T→P))``, the symmetric form used by MONAI's
  ``compute_hausdorff_distance(percentile=95)``. scikit-image's ``hausdorff_distance`` only
  gives the maximum (HD100), which one stray pixel dominates.
* **Boundary F1** at tolerance ``τ`` (Csurka et al. 2013, as in the DAVIS benchmark):
  precision = share of predicted boundary pixels within ``τ`` of the true boundary, recall =
  share of true boundary pixels within ``τ`` of the predicted one, ``BF = 2PR / (P + R)``.

Empty masks: both empty → HD95 0.0 and BF 1.0; exactly one empty → HD95 NaN (no finite
distance exists; left out of means, and the image count behind each mean shows it) and BF 0.0.
"""

from __future__ import annotations

import numpy as np

from sa2_pipeline.config import EvaluationConfig

__all__ = ["boundary_scores", "hd95", "boundary_f1", "mask_boundary"]


def mask_boundary(mask: np.ndarray) -> np.ndarray:
    """Inner boundary pixels of a binary mask (bool ``(H, W)``)."""
    from skimage.segmentation import find_boundaries

    mask = np.asarray(mask) != 0
    return find_boundaries(mask, connectivity=1, mode="inner", background=0) & mask


def _distance_to(boundary: np.ndarray) -> np.ndarray:
    """Distance of every pixel to the nearest pixel of ``boundary`` (non-empty)."""
    from scipy import ndimage

    return ndimage.distance_transform_edt(~boundary)


def _boundaries(pred, truth) -> tuple[np.ndarray, np.ndarray]:
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape or pred.ndim != 2:
        raise ValueError(f"need two (H, W) masks of one shape, got {pred.shape} and {truth.shape}")
    return mask_boundary(pred), mask_boundary(truth)


def hd95(pred: np.ndarray, truth: np.ndarray) -> float:
    """Symmetric 95th-percentile Hausdorff distance in pixels (module docstring)."""
    pred_b, true_b = _boundaries(pred, truth)
    if not pred_b.any() and not true_b.any():
        return 0.0
    if not pred_b.any() or not true_b.any():
        return float("nan")
    to_true = _distance_to(true_b)[pred_b]
    to_pred = _distance_to(pred_b)[true_b]
    return float(max(np.percentile(to_true, 95), np.percentile(to_pred, 95)))


def boundary_f1(pred: np.ndarray, truth: np.ndarray,
                tolerance: float = EvaluationConfig.boundary_tolerance) -> float:
    """Boundary F1 with a match tolerance of ``tolerance`` pixels (module docstring)."""
    if tolerance < 0:
        raise ValueError(f"boundary tolerance must be >= 0 pixels, got {tolerance}")
    pred_b, true_b = _boundaries(pred, truth)
    if not pred_b.any() and not true_b.any():
        return 1.0
    if not pred_b.any() or not true_b.any():
        return 0.0
    precision = float(np.mean(_distance_to(true_b)[pred_b] <= tolerance))
    recall = float(np.mean(_distance_to(pred_b)[true_b] <= tolerance))
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def boundary_scores(
    pred: np.ndarray, truth: np.ndarray, tolerance: float = EvaluationConfig.boundary_tolerance
) -> dict[str, float]:
    """``{"hd95": ..., "boundary_f1": ...}`` of one binary prediction against its truth."""
    return {"hd95": hd95(pred, truth), "boundary_f1": boundary_f1(pred, truth, tolerance)}
