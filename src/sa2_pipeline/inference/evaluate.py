"""Score every trained model on a test set: each fold member and each model's fold ensemble.

Each member is scored per image with :func:`sa2_pipeline.metrics.score` and
:func:`sa2_pipeline.metrics.objects.object_scores` (boundary metrics always; AJI, PQ and
object F1 where the image has a true instance map) at native resolution; members trained
on resized images (the paper's protocol, ``resize_to`` in the bundle) are also scored as
the release does, on the resized masks (``dice_224``...). The ensemble averages its
folds' probabilities before thresholding.

numpy and pandas at import; the predictor (torch) is imported when a test set is scored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from sa2_pipeline.config import EvaluationConfig, InstanceConfig
from sa2_pipeline.inference.engines import engine_predictor
from sa2_pipeline.inference.predict import probabilities_to_mask, resize_probabilities
from sa2_pipeline.metrics.objects import object_scores
from sa2_pipeline.metrics.segmentation import score

__all__ = ["evaluate_test_set", "group_members"]


def group_members(
    trained_models: Mapping[str, dict[str, Any]], primary: str
) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """``{model_name: [("fold<k>", bundle), ...]}`` in sorted key order.

    Raises:
        KeyError: If no bundle is named ``primary``.
    """
    by_model: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for key in sorted(trained_models):
        bundle = trained_models[key]
        by_model.setdefault(bundle["model_name"], []).append(
            (f"fold{bundle['metadata'].get('fold', 0)}", bundle))
    if primary not in by_model:
        raise KeyError(f"no trained model named {primary!r} among {sorted(trained_models)}")
    return by_model


def evaluate_test_set(
    trained_models: Mapping[str, dict[str, Any]],
    images: Mapping[str, np.ndarray],
    masks: Mapping[str, np.ndarray],
    *,
    primary: str,
    threshold: float,
    predictor_options: Mapping[str, Any],
    instances: Mapping[str, np.ndarray] | None = None,
    instance_cfg: InstanceConfig | None = None,
    boundary_tolerance: float = EvaluationConfig.boundary_tolerance,
) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """Predict and score every image with every member of every model.

    Args:
        trained_models: Model bundles by key; grouped by ``model_name``.
        images: Test images (H, W, C) uint8 by id.
        masks: Their true masks (H, W) by id.
        primary: The model whose final member's masks are returned.
        threshold: Foreground probability threshold (binary models).
        predictor_options: Keyword arguments of
            :func:`sa2_pipeline.inference.engines.engine_predictor` (device, tta, overlap,
            batch_size, patch_size, precision; engine and onnx_files).
        instances: True instance maps by id (images without one get no object metrics).
        instance_cfg: How predicted objects are cut out (at ``threshold``, so objects come
            from exactly the scored mask).
        boundary_tolerance: Boundary F1 tolerance in pixels.

    Returns:
        ``(predictions, per_image)``: the primary model's final-member masks by id, and
        one row per (model, member, image) with columns ``model``, ``member``, ``id``
        and the scores.
    """

    by_model = group_members(trained_models, primary)
    objects = _ObjectScoring(instance_cfg or InstanceConfig(), threshold, boundary_tolerance,
                             instances or {})
    rows: list[dict[str, Any]] = []
    predictions: dict[str, np.ndarray] = {}
    for name, members in by_model.items():
        # ``engine``/``onnx_files`` in the options: an engine runs them (evaluation.engine)
        predictor = engine_predictor([b for _, b in members], **predictor_options)
        for image_id in sorted(images):
            scored = _score_image(predictor, members, images[image_id], masks[image_id],
                                  threshold, objects.for_image(image_id))
            for member, scores, _ in scored:
                rows.append({"model": name, "member": member, "id": image_id, **scores})
            if name == primary:
                predictions[image_id] = scored[-1][2]
    return predictions, pd.DataFrame(rows)


def _score_image(
    predictor: Any,
    members: Sequence[tuple[str, dict[str, Any]]],
    image: np.ndarray,
    truth: np.ndarray,
    threshold: float,
    objects: Any = None,
) -> list[tuple[str, dict[str, float], np.ndarray]]:
    """``[(member, scores, native mask)]`` for each member, then the ensemble if any."""

    n_classes = predictor.num_classes
    side = members[0][1].get("resize_to")
    height, width = truth.shape
    work = predictor.member_probabilities(image, native=False)
    native = [resize_probabilities(p, height, width) for p in work]
    labelled = [(label, w, n) for (label, _), w, n in zip(members, work, native, strict=True)]
    if len(members) > 1:
        labelled.append(("ensemble", np.mean(work, axis=0), np.mean(native, axis=0)))
    truth_small = _resized_truth(image, truth, side) if side else None
    out = []
    for member, probs_work, probs_native in labelled:
        pred = probabilities_to_mask(probs_native, threshold)
        scores = score(pred, truth, n_classes)
        if objects is not None:
            scores.update(objects(pred, truth, n_classes, probs_native))
        if side:
            small = score(probabilities_to_mask(probs_work, threshold), truth_small, n_classes)
            scores.update({f"{k}_{side}": v for k, v in small.items()})
        out.append((member, scores, pred))
    return out


@dataclass(frozen=True)
class _ObjectScoring:
    """Boundary and object scores of one image's prediction (native resolution)."""

    cfg: InstanceConfig
    threshold: float
    tolerance: float
    instances: Mapping[str, np.ndarray]

    def for_image(self, image_id: str):
        truth_instances = self.instances.get(image_id)

        def scores(pred, truth, n_classes, probabilities) -> dict[str, float]:
            probability = probabilities[0] if n_classes <= 1 else None
            return object_scores(pred, truth, n_classes, truth_instances, probability,
                                 self.cfg, self.tolerance, self.threshold)

        return scores


def _resized_truth(image: np.ndarray, truth: np.ndarray, side: int) -> np.ndarray:
    from sa2_pipeline.dataloading.dataset import resize_pair

    mode = "bilinear_threshold" if int(truth.max(initial=0)) <= 1 else "nearest"
    return resize_pair(image, truth, side, mask_mode=mode)[1]
