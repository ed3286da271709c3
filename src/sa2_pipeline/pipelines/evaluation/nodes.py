"""Predict the held-out test set, score it per image, register and gate the model."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import numpy as np
import pandas as pd

from sa2_pipeline.config import EvaluationConfig, RegistryConfig, parse

logger = logging.getLogger(__name__)


def evaluate_models(
    trained_models: dict[str, dict[str, Any]],
    model_input_test: dict,
    model_params: dict[str, Any],
    params: dict[str, Any],
) -> tuple[dict[str, np.ndarray], pd.DataFrame, dict[str, Any], dict[str, dict[str, float]]]:
    """Predict the held-out test set with every fold model and every model's fold ensemble.

    Each member is scored per image (Dice, IoU) at native resolution; members trained on
    resized images (the paper's protocol) are also scored as the release does, on the
    resized masks (``dice_224``...). The ensemble averages the folds' probabilities and
    thresholds at ``evaluation.threshold``.

    Returns:
        ``(test_predictions, per_image, summary, mlflow_metrics)``: the primary model's
        ensemble masks by id; a row per (model, member, image); fold mean +- std and
        ensemble scores per model, with ``test_dice``/``test_iou`` = the primary model's
        ensemble (what the promotion gate compares); the same as flat MLflow metrics.
    """
    from sa2_pipeline.engine.runtime import select_device
    from sa2_pipeline.inference.predict import (
        Predictor,
        probabilities_to_mask,
        resize_probabilities,
    )

    cfg = parse(EvaluationConfig, params, "evaluation")
    primary = str(model_params["name"])
    device = select_device(cfg.device)
    by_model: dict[str, list[tuple[str, dict]]] = {}
    for key in sorted(trained_models):
        bundle = trained_models[key]
        by_model.setdefault(bundle["model_name"], []).append(
            (f"fold{bundle['metadata'].get('fold', 0)}", bundle))
    if primary not in by_model:
        raise KeyError(f"no trained model named {primary!r} among {sorted(trained_models)}")

    images, masks = model_input_test["images"], model_input_test["masks"]
    rows: list[dict[str, Any]] = []
    predictions: dict[str, np.ndarray] = {}
    for name, members in by_model.items():
        predictor = Predictor([b for _, b in members], device=device, tta=cfg.tta,
                              overlap=cfg.overlap, batch_size=cfg.batch_size,
                              patch_size=cfg.patch_size)
        n_classes = predictor.num_classes
        side = members[0][1].get("resize_to")
        for image_id in sorted(images):
            image, truth = images[image_id], masks[image_id]
            height, width = truth.shape
            work = predictor.member_probabilities(image, native=False)
            native = [resize_probabilities(p, height, width) for p in work]
            labelled = [(label, w, n) for (label, _), w, n in zip(members, work, native,
                                                                    strict=True)]
            if len(members) > 1:
                labelled.append(("ensemble", np.mean(work, axis=0), np.mean(native, axis=0)))
            truth_small = _resized_truth(image, truth, side) if side else None
            for member, probs_work, probs_native in labelled:
                pred = probabilities_to_mask(probs_native, cfg.threshold)
                row = {"model": name, "member": member, "id": image_id,
                       **_scores(pred, truth, n_classes, "")}
                if side:
                    row.update(_scores(probabilities_to_mask(probs_work, cfg.threshold),
                                       truth_small, n_classes, f"_{side}"))
                rows.append(row)
                if name == primary and member == labelled[-1][0]:
                    predictions[image_id] = pred
    per_image = pd.DataFrame(rows)
    summary = _summarise(per_image, primary)
    summary["test_set_id"] = frozen_test_set_id(model_input_test)
    summary["n_images"] = len(images)
    logger.info("test set (primary %s): %s", primary,
                {k: round(v, 4) for k, v in summary.items() if isinstance(v, float)})
    return predictions, per_image, summary, _flat_metrics(summary)


def _resized_truth(image: np.ndarray, truth: np.ndarray, side: int) -> np.ndarray:
    from sa2_pipeline.dataloading.dataset import resize_pair

    mode = "bilinear_threshold" if int(truth.max(initial=0)) <= 1 else "nearest"
    return resize_pair(image, truth, side, mask_mode=mode)[1]


def _scores(pred: np.ndarray, truth: np.ndarray, n_classes: int, suffix: str) -> dict:
    from sa2_pipeline.metrics import score

    return {f"{k}{suffix}": v for k, v in score(pred, truth, n_classes).items()}


def _summarise(per_image: pd.DataFrame, primary: str) -> dict[str, Any]:
    metrics = [c for c in per_image.columns if c.startswith(("dice", "iou"))]
    summary: dict[str, Any] = {"primary_model": primary, "models": {}}
    for name, frame in per_image.groupby("model", sort=False):
        means = frame.groupby("member")[metrics].mean()
        folds = means.loc[[m for m in means.index if m != "ensemble"]]
        final = "ensemble" if "ensemble" in means.index else folds.index[0]
        entry = {
            "members": {m: {c: float(v) for c, v in means.loc[m].items()} for m in means.index},
            "fold_mean": {c: float(folds[c].mean()) for c in metrics},
            "fold_std": {c: float(folds[c].std(ddof=0)) for c in metrics},
            "final_member": final,
            "final": {c: float(means.loc[final, c]) for c in metrics},
        }
        summary["models"][name] = entry
        if name == primary:
            final_rows = frame[frame["member"] == final]
            for c in metrics:
                summary[f"test_{c}"] = float(final_rows[c].mean())
                summary[f"test_{c}_std"] = float(final_rows[c].std(ddof=0))
                summary[f"test_{c}_median"] = float(final_rows[c].median())
    return summary


def _flat_metrics(summary: dict[str, Any]) -> dict[str, dict[str, float]]:
    flat = {k: v for k, v in summary.items() if isinstance(v, float)}
    for name, entry in summary["models"].items():
        for member, values in entry["members"].items():
            flat.update({f"{name}.{member}.{c}": v for c, v in values.items()})
        flat.update({f"{name}.folds.{c}_mean": v for c, v in entry["fold_mean"].items()})
        flat.update({f"{name}.folds.{c}_std": v for c, v in entry["fold_std"].items()})
    return {k: {"value": float(v), "step": 0} for k, v in flat.items()}


def register_model(
    trained_models: dict[str, dict[str, Any]],
    test_summary: dict[str, Any],
    model_input_test: dict,
    registry_params: dict[str, Any],
    evaluation_params: dict[str, Any],
) -> dict[str, Any]:
    """Register the primary model in MLflow as ``challenger``; ``champion`` if it is better.

    With several folds the registered model is their ensemble (mean probability), which
    is what ``test_dice`` scored. Needs an active MLflow run (kedro-mlflow opens one per
    ``kedro run``). A champion scored on another test set is re-scored on this one before
    the comparison.

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

    primary = test_summary["primary_model"]
    members = [trained_models[k] for k in sorted(trained_models)
               if trained_models[k]["model_name"] == primary]
    n_classes = int(members[0]["init_kwargs"].get("num_classes", 1))
    metric_column = cfg.promotion_metric.removeprefix("test_")

    def score_champion(model_uri: str) -> float:
        """The champion's promotion metric on this test set, through its own pyfunc."""
        import mlflow.pyfunc

        champion = mlflow.pyfunc.load_model(model_uri)
        masks = model_input_test["masks"]
        values = []
        for i in sorted(masks):
            pred = champion.predict(model_input_test["images"][i],
                                    params={"threshold": eval_cfg.threshold})
            values.append(_scores(pred, masks[i], n_classes, "")[metric_column])
        return float(np.mean(values))

    scores = {k: float(v) for k, v in test_summary.items()
              if k.startswith("test_") and isinstance(v, float)}
    record = register_and_promote(
        members[0] if len(members) == 1 else members,
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
