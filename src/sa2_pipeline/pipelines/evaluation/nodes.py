"""Predict the held-out test set, score it per image, register and gate the model."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import numpy as np
import pandas as pd

from sa2_pipeline.config import EvaluationConfig, RegistryConfig, parse

logger = logging.getLogger(__name__)


def predict_test_set(
    trained_model: dict[str, Any], model_input_test: dict, params: dict[str, Any]
) -> dict[str, np.ndarray]:
    """Segment every test image at native resolution (sliding window for large images).

    Returns:
        uint8 label masks by image id.
    """
    from sa2_pipeline.engine.runtime import select_device
    from sa2_pipeline.inference.predict import predict_probabilities, probabilities_to_mask
    from sa2_pipeline.models.bundle import channel_order_of, model_from_bundle, num_classes_of

    cfg = parse(EvaluationConfig, params, "evaluation")
    device = select_device(cfg.device)
    model = model_from_bundle(trained_model).to(device)
    images = model_input_test["images"]
    stream = predict_probabilities(
        model, ((i, images[i]) for i in sorted(images)),
        num_classes=num_classes_of(trained_model), patch_size=cfg.patch_size,
        overlap=cfg.overlap, batch_size=cfg.batch_size, tta=cfg.tta,
        channel_order=channel_order_of(trained_model), device=device,
    )
    return {i: probabilities_to_mask(p, cfg.threshold) for i, p in stream}


def score_test_set(
    test_predictions: dict[str, np.ndarray], model_input_test: dict, trained_model: dict
) -> tuple[pd.DataFrame, dict[str, float], dict[str, dict[str, float]]]:
    """Per-image Dice and IoU, and their summary.

    Returns:
        ``(per_image, summary, mlflow_metrics)``: a row per test image; mean / std /
        median of every metric plus the test-set id; the same means for MLflow.
    """
    from sa2_pipeline.metrics.segmentation import dice_iou, per_class_dice_iou
    from sa2_pipeline.models.bundle import num_classes_of

    masks = model_input_test["masks"]
    missing = sorted(set(masks) - set(test_predictions))
    if missing:
        raise KeyError(f"test images without a prediction: {missing}")
    n_classes = num_classes_of(trained_model)
    rows = []
    for image_id in sorted(masks):
        pred, true = test_predictions[image_id], masks[image_id]
        row: dict[str, Any] = {"id": image_id, "height": true.shape[0], "width": true.shape[1]}
        if n_classes == 1:
            row["dice"], row["iou"] = dice_iou(pred, true)
        else:
            scores = per_class_dice_iou(pred, true, n_classes)
            row.update({k: v for k, v in scores.items() if isinstance(v, int | float)})
        row["fg_fraction_true"] = float((true > 0).mean())
        row["fg_fraction_pred"] = float((pred > 0).mean())
        rows.append(row)
    per_image = pd.DataFrame(rows)
    metric_cols = [c for c in per_image.columns if c.startswith(("dice", "iou"))]
    summary: dict[str, Any] = {"n_images": len(per_image)}
    for col in metric_cols:
        values = per_image[col].to_numpy(dtype=float)
        summary[f"test_{col}"] = float(np.nanmean(values))
        summary[f"test_{col}_std"] = float(np.nanstd(values))
        summary[f"test_{col}_median"] = float(np.nanmedian(values))
    summary["test_set_id"] = frozen_test_set_id(model_input_test)
    logger.info("test set: %s", {k: round(v, 4) for k, v in summary.items()
                                 if isinstance(v, float)})
    mlflow_metrics = {k: {"value": v, "step": 0} for k, v in summary.items()
                      if isinstance(v, float)}
    return per_image, summary, mlflow_metrics


def register_model(
    trained_model: dict[str, Any],
    test_summary: dict[str, Any],
    model_input_test: dict,
    registry_params: dict[str, Any],
    evaluation_params: dict[str, Any],
) -> dict[str, Any]:
    """Register the model in MLflow as ``challenger``; make it ``champion`` if it is better.

    Needs an active MLflow run (kedro-mlflow opens one per ``kedro run``). A champion
    scored on another test set is re-scored on this one before the comparison.

    Returns:
        The registration record (version, aliases, decision, both scores).
    """
    import sys

    cfg = parse(RegistryConfig, registry_params, "registry")
    mlflow = sys.modules.get("mlflow")
    if not cfg.register:
        return {"registered": False, "reason": "registry.register is false"}
    if mlflow is None or mlflow.active_run() is None:
        logger.warning("no active MLflow run: the model is not registered")
        return {"registered": False, "reason": "no active MLflow run"}

    from sa2_pipeline.inference.registry import register_and_promote

    eval_cfg = parse(EvaluationConfig, evaluation_params, "evaluation")

    def score_champion(model_uri: str) -> float:
        import mlflow.pyfunc

        from sa2_pipeline.metrics.segmentation import dice_iou

        champion = mlflow.pyfunc.load_model(model_uri)
        masks = model_input_test["masks"]
        scores = [
            dice_iou(champion.predict(model_input_test["images"][i],
                                      params={"threshold": eval_cfg.threshold}), masks[i])[0]
            for i in sorted(masks)
        ]
        return float(np.mean(scores))

    scores = {k: float(v) for k, v in test_summary.items()
              if k.startswith("test_") and isinstance(v, float)}
    record = register_and_promote(
        trained_model,
        model_name=cfg.model_name,
        test_scores=scores,
        test_set_id=test_summary["test_set_id"],
        metric=cfg.promotion_metric,
        margin=cfg.promotion_margin,
        input_example_size=cfg.input_example_size,
        score_champion=score_champion,
    )
    return {"registered": True, **record}


def frozen_test_set_id(model_input_test: dict) -> str:
    """A short hash of the test images' ids and masks: "the same frozen test set"."""
    h = hashlib.sha256()
    for image_id in sorted(model_input_test["masks"]):
        h.update(image_id.encode())
        h.update(np.ascontiguousarray(model_input_test["masks"][image_id]).data)
    return h.hexdigest()[:16]
