"""Train every configured model on every configured fold; select on validation only."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from sa2_pipeline.config import (
    EvaluationConfig,
    IngestionConfig,
    ProcessingConfig,
    TrainingConfig,
    parse,
    parse_models,
)
from sa2_pipeline.datasets.registry import training_pixel_size
from sa2_pipeline.engine.fit import fit_segmentation_model
from sa2_pipeline.tracking import active_run_info
from sa2_pipeline.tracking.training_callbacks import training_callbacks
from sa2_pipeline.user_errors import find_user_error

logger = logging.getLogger(__name__)


def fit_models(
    model_input_trainval: dict,
    splits: pd.DataFrame,
    model_params: dict[str, Any],
    baseline_params: list[dict[str, Any]] | None,
    training_params: dict[str, Any],
    processing_params: dict[str, Any],
    evaluation_params: dict[str, Any],
    ingestion_params: dict[str, Any] | None = None,
) -> tuple[dict[str, dict[str, Any]], pd.DataFrame, dict[str, Any]]:
    """Train the primary model and each baseline on the same folds with the same budget.

    Every (model, fold) run checkpoints every epoch in its own folder, so a rerun after a
    kill or a failed fold resumes the unfinished ones and reuses the finished ones
    instantly. All folds are attempted; failures are raised together at the end.

    Args:
        model_input_trainval: Every non-test image and mask (``{"images", "masks"}``).
        splits: ``id``, ``split``, ``fold`` (from ``split_dataset``).
        model_params: ``params:model`` (the primary model: registered and promoted).
        baseline_params: ``params:baselines``: models compared in the report (may be empty).
        training_params: ``params:training`` (``folds``: list of folds or ``all``).
        processing_params: ``params:data_processing`` (native or resize mode).
        evaluation_params: ``params:evaluation`` (validation uses its tile size).
        ingestion_params: ``params:data_ingestion`` (the bundles' ``pixel_size_um``).

    Returns:
        ``(trained_models, training_history, training_run)``: bundles keyed
        ``<model>-fold<k>``, one history row per epoch with ``model`` and ``fold``
        columns, and the MLflow run that recorded them.
    """
    models = parse_models(model_params, baseline_params)
    train_cfg = parse(TrainingConfig, training_params, "training")
    proc_cfg = parse(ProcessingConfig, processing_params, "data_processing")
    eval_cfg = parse(EvaluationConfig, evaluation_params, "evaluation")
    folds = _folds(splits, train_cfg.folds)

    trained: dict[str, dict[str, Any]] = {}
    histories, failures = [], {}
    for model_cfg in models:
        for fold in folds:
            key = f"{model_cfg.name}-fold{fold}"
            try:
                bundle, history = _fit_fold(model_input_trainval, splits, fold, key, model_cfg,
                                            train_cfg, proc_cfg.mode, eval_cfg.patch_size)
            except Exception as err:  # noqa: BLE001 - other folds still run; raised below
                logger.exception("%s failed; its checkpoint is kept for a rerun", key)
                failures[key] = err
                continue
            trained[key] = bundle
            histories.append(pd.DataFrame(history).assign(model=model_cfg.name, fold=fold))
    if failures:
        _raise_failures(failures, len(models) * len(folds))
    run = active_run_info()
    provenance = {"mlflow_run_id": run["run_id"],
                  "pixel_size_um": _pixel_size(ingestion_params, proc_cfg.mode)}
    for bundle in trained.values():
        bundle["metadata"].update(provenance)
    history = pd.concat(histories, ignore_index=True)
    return trained, history[["model", "fold", *history.columns[:-2]]], run


def _pixel_size(ingestion_params: dict[str, Any] | None, mode: str) -> float | None:
    cfg = parse(IngestionConfig, ingestion_params or {}, "data_ingestion")
    size = training_pixel_size(cfg.format, cfg.pixel_size_um, max_side=cfg.max_side,
                               mode=mode)
    logger.info("training pixel size: %s", "unknown (set data_ingestion.pixel_size_um)"
                if size is None else f"{size:g} um/px")
    return size


def _raise_failures(failures: dict[str, Exception], total: int) -> None:
    """One error naming every failed (model, fold) run, with what to do next."""

    detail = "; ".join(f"{k}: {type(e).__name__}: {e}" for k, e in failures.items())
    # A bad file or setting fails the same way on every rerun: say to fix it.
    fix_first = any(find_user_error(e) for e in failures.values())
    advice = ("Fix what the message names (delete the file or correct the setting), then "
              "rerun; finished runs are checkpointed." if fix_first else
              "Finished runs are checkpointed: rerun the same command to resume.")
    raise RuntimeError(
        f"{len(failures)} of {total} training runs failed ({detail}). " + advice
    ) from next(iter(failures.values()))


def _fit_fold(model_input_trainval: dict, splits: pd.DataFrame, fold: int, key: str,
              model_cfg: Any, train_cfg: TrainingConfig, mode: str,
              eval_patch_size: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Train one (model, fold), tracked in the active MLflow run under ``<model>/fold<k>/``."""
    from sa2_pipeline.splits import fold_ids

    images, masks = model_input_trainval["images"], model_input_trainval["masks"]
    train_ids, val_ids = fold_ids(splits, fold)
    logger.info("training %s: %d train / %d validation images", key, len(train_ids),
                len(val_ids))
    bundle, history = fit_segmentation_model(
        {i: images[i] for i in train_ids}, {i: masks[i] for i in train_ids},
        {i: images[i] for i in val_ids}, {i: masks[i] for i in val_ids},
        model_cfg, train_cfg,
        mode=mode,
        eval_patch_size=eval_patch_size,
        run_name=key,
        callbacks=training_callbacks(prefix=f"{model_cfg.name}/fold{fold}/"),
    )
    bundle["metadata"].update({"fold": fold, "model_key": key})
    meta = bundle["metadata"]
    logger.info("%s: best validation Dice %.4f at epoch %d of %d", key,
                meta["best_val_dice"], meta["best_epoch"], meta["epochs_run"])
    return bundle, history


def _folds(splits: pd.DataFrame, wanted: tuple[int, ...] | str) -> list[int]:
    if (splits["split"] == "val").any():
        return [0]
    n_folds = int(splits["fold"].max()) + 1
    if wanted == "all":
        return list(range(n_folds))
    bad = [f for f in wanted if f >= n_folds]
    if bad:
        raise ValueError(f"training.folds {list(wanted)} names folds {bad} but the splits "
                         f"have folds 0..{n_folds - 1}")
    return list(wanted)
