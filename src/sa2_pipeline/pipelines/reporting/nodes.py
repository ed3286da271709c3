"""Figures and the run report (logged to MLflow through the catalog)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sa2_pipeline.config import EvaluationConfig, ReportingConfig, parse


def plot_learning_curves(training_history: pd.DataFrame):
    """Loss, validation Dice and learning rate per epoch."""
    from sa2_pipeline.reporting.figures import plot_learning_curves as plot

    return plot(training_history)


def plot_metric_distribution(test_metrics_per_image: pd.DataFrame):
    """Distribution of per-image test scores (Dice, IoU, and AJI/PQ/F1 where present)."""
    from sa2_pipeline.reporting.figures import plot_metric_distribution as plot

    return plot(test_metrics_per_image)


def predicted_instances(
    predictions: dict[str, np.ndarray], evaluation_params: dict[str, Any]
) -> dict[str, np.ndarray]:
    """The objects evaluation scored, cut out of the saved masks with its settings."""
    from sa2_pipeline.metrics.instances import InstanceParams, extract_instances

    cfg = parse(EvaluationConfig, evaluation_params, "evaluation")
    params = InstanceParams(
        method=cfg.instances.method,
        threshold=0.5,
        min_distance=cfg.instances.min_distance,
        min_size=cfg.instances.min_size,
        connectivity=cfg.instances.connectivity,
    )
    return {
        i: extract_instances((p > 0).astype(np.float32), params) for i, p in predictions.items()
    }


def plot_test_overlays(
    model_input_test: dict,
    test_predictions: dict[str, np.ndarray],
    test_metrics_per_image: pd.DataFrame,
    test_summary: dict[str, Any],
    params: dict[str, Any],
    evaluation_params: dict[str, Any],
):
    """Worst and best test images of the primary model: error map and object outlines."""
    from sa2_pipeline.metrics.summary import primary_rows
    from sa2_pipeline.reporting.figures import plot_error_maps

    cfg = parse(ReportingConfig, params, "reporting")
    true_instances = model_input_test.get("instances") or None
    n_worst = (cfg.n_overlays + 1) // 2
    return plot_error_maps(
        model_input_test["images"],
        model_input_test["masks"],
        test_predictions,
        primary_rows(test_metrics_per_image, test_summary),
        n_worst=n_worst,
        n_best=cfg.n_overlays - n_worst,
        true_instances=true_instances,
        pred_instances=predicted_instances(test_predictions, evaluation_params),
    )


def _provenance(cfg: ReportingConfig, test_summary: dict, bundle: dict) -> dict[str, Any]:
    from sa2_pipeline.reporting.provenance import (
        active_mlflow_run,
        dvc_data_version,
        git_commit,
        mlflow_run_link,
    )

    root = Path.cwd()
    run = active_mlflow_run()
    run_id = run.get("run_id") or bundle.get("metadata", {}).get("mlflow_run_id")
    return {
        "dataset": cfg.dataset or "unknown",
        "data_version": dvc_data_version(root, cfg.dataset),
        "test_set_id": test_summary.get("test_set_id"),
        "git_commit": git_commit(root),
        "mlflow_run_id": run_id,
        "mlflow_run_link": mlflow_run_link(
            run.get("tracking_uri"), run.get("experiment_id"), run_id
        ),
        "tracking_uri": run.get("tracking_uri"),
    }


def build_report(
    trained_models: dict[str, dict[str, Any]],
    test_summary: dict[str, Any],
    test_metrics_per_image: pd.DataFrame,
    model_registration: dict[str, Any],
    learning_curves,
    metric_distribution,
    test_overlays,
    params: dict[str, Any],
) -> tuple[str, str]:
    """Markdown and self-contained HTML report of the run.

    Returns:
        ``(report_markdown, report_html)``.
    """
    from sa2_pipeline.metrics.summary import primary_rows
    from sa2_pipeline.reporting import report
    from sa2_pipeline.reporting.published import published_for

    cfg = parse(ReportingConfig, params, "reporting")
    bundle = report.primary_bundle(trained_models, test_summary["primary_model"])
    return report.build_report(
        title=cfg.title,
        dataset=cfg.dataset,
        model_desc=report.model_description(bundle),
        test_summary=test_summary,
        per_image=primary_rows(test_metrics_per_image, test_summary),
        runs=report.runs_table(trained_models),
        registration=model_registration,
        provenance=_provenance(cfg, test_summary, bundle),
        published=published_for(cfg.dataset),
        figures={
            "test_overlays": test_overlays,
            "metric_distribution": metric_distribution,
            "learning_curves": learning_curves,
        },
    )
