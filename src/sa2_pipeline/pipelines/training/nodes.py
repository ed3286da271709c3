"""Train the model on the training split, select on the validation split only."""

from __future__ import annotations

import logging
import sys
from typing import Any

import pandas as pd

from sa2_pipeline.config import (
    EvaluationConfig,
    ModelConfig,
    ProcessingConfig,
    TrainingConfig,
    parse,
)

logger = logging.getLogger(__name__)


def fit_model(
    model_input_train: dict,
    model_input_val: dict,
    model_params: dict[str, Any],
    training_params: dict[str, Any],
    processing_params: dict[str, Any],
    evaluation_params: dict[str, Any],
) -> tuple[dict[str, Any], pd.DataFrame, dict[str, Any]]:
    """Train, checkpointing every epoch (resumable), and keep the best validation weights.

    Args:
        model_input_train / model_input_val: ``{"images": ..., "masks": ...}`` bundles.
        model_params: ``params:model``.
        training_params: ``params:training``.
        processing_params: ``params:data_processing`` (native or resize mode, fold).
        evaluation_params: ``params:evaluation`` (validation uses its tile size).

    Returns:
        ``(trained_model, training_history, training_run)``: the model bundle, one row per
        epoch, and the MLflow run that recorded it (for later stages to continue).
    """
    from sa2_pipeline.engine.fit import fit_segmentation_model

    model_cfg = parse(ModelConfig, model_params, "model")
    train_cfg = parse(TrainingConfig, training_params, "training")
    proc_cfg = parse(ProcessingConfig, processing_params, "data_processing")
    eval_cfg = parse(EvaluationConfig, evaluation_params, "evaluation")
    bundle, history = fit_segmentation_model(
        model_input_train["images"],
        model_input_train["masks"],
        model_input_val["images"],
        model_input_val["masks"],
        model_cfg,
        train_cfg,
        mode=proc_cfg.mode,
        eval_patch_size=eval_cfg.patch_size,
        run_name=f"{model_cfg.name}-fold{proc_cfg.fold}",
    )
    run = _active_mlflow_run()
    bundle["metadata"]["mlflow_run_id"] = run["run_id"]
    meta = bundle["metadata"]
    logger.info(
        "best validation Dice %.4f at epoch %d of %d", meta["best_val_dice"],
        meta["best_epoch"], meta["epochs_run"],
    )
    return bundle, pd.DataFrame(history), run


def _active_mlflow_run() -> dict[str, Any]:
    mlflow = sys.modules.get("mlflow")
    run = mlflow.active_run() if mlflow is not None else None
    if run is None:
        return {"run_id": None, "experiment_id": None}
    return {"run_id": run.info.run_id, "experiment_id": run.info.experiment_id}
