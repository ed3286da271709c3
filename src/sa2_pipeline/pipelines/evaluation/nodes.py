"""Predict the held-out test set, score it per image, register and gate the model."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from sa2_pipeline.config import EvaluationConfig, RegistryConfig, parse
from sa2_pipeline.metrics import score
from sa2_pipeline.runtime.threads import configure_threads
from sa2_pipeline.tracking import active_run_info
from sa2_pipeline.tracking.model_loading import load_pyfunc

logger = logging.getLogger(__name__)


def evaluate_models(
    trained_models: dict[str, dict[str, Any]],
    model_input_test: dict,
    model_params: dict[str, Any],
    params: dict[str, Any],
) -> tuple[dict[str, np.ndarray], pd.DataFrame, dict[str, Any], dict[str, dict[str, float]]]:
    """Predict the held-out test set with every fold model and every model's fold ensemble.

    Scoring is :func:`sa2_pipeline.inference.evaluate.evaluate_test_set` (Dice, IoU,
    boundary metrics, and object metrics where the test set has instance maps), the summary
    :func:`sa2_pipeline.metrics.summary.summarise_test_set` plus bootstrap intervals and
    paired comparisons against each baseline
    (:func:`sa2_pipeline.metrics.comparison.add_uncertainty`).

    Returns:
        ``(test_predictions, per_image, summary, mlflow_metrics)``: the primary model's
        ensemble masks by id; a row per (model, member, image); fold mean +- std and
        ensemble scores per model, with ``test_dice``/``test_iou`` = the primary model's
        ensemble (what the promotion gate compares); the same as flat MLflow metrics.
    """
    from sa2_pipeline.inference.evaluate import evaluate_test_set
    from sa2_pipeline.metrics.comparison import add_uncertainty
    from sa2_pipeline.metrics.summary import flat_metrics, frozen_test_set_id, summarise_test_set
    from sa2_pipeline.runtime.devices import select_device

    cfg = parse(EvaluationConfig, params, "evaluation")
    configure_threads(cfg.num_threads)
    primary = str(model_params["name"])
    predictions, per_image = evaluate_test_set(
        trained_models, model_input_test["images"], model_input_test["masks"],
        primary=primary, threshold=cfg.threshold,
        predictor_options={"device": select_device(cfg.device), "tta": cfg.tta,
                           "overlap": cfg.overlap, "batch_size": cfg.batch_size,
                           "patch_size": cfg.patch_size, "precision": cfg.precision,
                           # a non-torch engine runs an export made now (not registered)
                           "engine": cfg.engine, "onnx_files": "export"},
        instances=model_input_test.get("instances"),
        instance_cfg=cfg.instances,
        boundary_tolerance=cfg.boundary_tolerance,
    )
    summary = summarise_test_set(per_image, primary)
    add_uncertainty(summary, per_image, n_resamples=cfg.bootstrap_resamples,
                    seed=cfg.bootstrap_seed)
    summary["test_set_id"] = frozen_test_set_id(model_input_test)
    summary["n_images"] = len(model_input_test["images"])
    logger.info("test set (primary %s): %s", primary,
                {k: round(v, 4) for k, v in summary.items() if isinstance(v, float)})
    return predictions, per_image, summary, flat_metrics(summary)


def register_model(
    trained_models: dict[str, dict[str, Any]],
    test_summary: dict[str, Any],
    test_metrics_per_image: pd.DataFrame,
    model_input_test: dict,
    registry_params: dict[str, Any],
    evaluation_params: dict[str, Any],
) -> dict[str, Any]:
    """Register the primary model in MLflow as ``challenger``; ``champion`` if truly better.

    With several folds the registered model is their ensemble (mean probability), which
    is what ``test_dice`` scored. Needs an active MLflow run (kedro-mlflow opens one per
    ``kedro run``). The champion is re-scored per image on this test set through its own
    pyfunc and the statistical gate decides (``sa2_pipeline.metrics.promotion``).

    Returns:
        The registration record (version, aliases, decision, the gate's numbers).
    """

    cfg = parse(RegistryConfig, registry_params, "registry")
    if not cfg.register:
        return {"registered": False, "reason": "registry.register is false"}
    if active_run_info()["run_id"] is None:
        logger.warning("no active MLflow run: the model is not registered")
        return {"registered": False, "reason": "no active MLflow run"}

    from sa2_pipeline.tracking.registration import ModelToRegister, register_gated

    eval_cfg = parse(EvaluationConfig, evaluation_params, "evaluation")
    primary = test_summary["primary_model"]
    members = [trained_models[k] for k in sorted(trained_models)
               if trained_models[k]["model_name"] == primary]
    n_classes = int(members[0]["init_kwargs"].get("num_classes", 1))
    final = test_summary["models"][primary]["final_member"]
    rows = test_metrics_per_image[(test_metrics_per_image["model"] == primary)
                                  & (test_metrics_per_image["member"] == final)]
    per_image = rows.set_index(rows["id"].astype(str))

    scores = {k: float(v) for k, v in test_summary.items()
              if k.startswith("test_") and isinstance(v, float)}
    model = ModelToRegister(
        members[0] if len(members) == 1 else members, model_name=cfg.model_name,
        test_scores=scores, per_image=per_image, test_set_id=test_summary["test_set_id"],
        data_version=cfg.data_version, input_example_size=cfg.input_example_size,
        parity_images=[model_input_test["images"][i] for i in sorted(model_input_test["images"])])
    return {"registered": True,
            **register_gated(model, config=cfg, score_champion=_champion_scorer(
                model_input_test, n_classes, eval_cfg.threshold, eval_cfg.engine))}


def _champion_scorer(model_input_test: dict, n_classes: int, threshold: float,
                     engine: str):
    """``score_champion(model_uri)``: a registered model's per-image scores on this test
    set, through its own pyfunc (how the gate compares the champion image by image), run
    by ``evaluation.engine`` as the challenger was."""

    def score_champion(model_uri: str) -> pd.DataFrame:
        champion = load_pyfunc(model_uri, engine)
        masks = model_input_test["masks"]
        scored = {i: score(champion.predict(model_input_test["images"][i],
                                            params={"threshold": threshold}),
                           masks[i], n_classes) for i in sorted(masks)}
        return pd.DataFrame.from_dict(scored, orient="index")

    return score_champion


def headline_metrics(test_summary: dict[str, Any]) -> dict[str, Any]:
    """``metrics.json``: the summary's headline numbers, what ``dvc metrics show`` prints."""
    from sa2_pipeline.metrics.summary import headline_metrics as headline

    return headline(test_summary)
