"""Figures and the run report (logged to MLflow through the catalog)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sa2_pipeline.config import EvaluationConfig, ReportingConfig, parse
from sa2_pipeline.metrics.instances import mask_instances
from sa2_pipeline.reporting.provenance import collect_provenance
from sa2_pipeline.reporting.published import published_for


def plot_learning_curves(training_history: pd.DataFrame):
    """Loss, validation Dice and learning rate per epoch."""
    from sa2_pipeline.reporting.figures import plot_learning_curves as plot

    return plot(training_history)


def plot_metric_distribution(test_metrics_per_image: pd.DataFrame):
    """Distribution of per-image test scores (Dice, IoU, and AJI/PQ/F1 where present)."""
    from sa2_pipeline.reporting.figures import plot_metric_distribution as plot

    return plot(test_metrics_per_image)


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
    instance_cfg = parse(EvaluationConfig, evaluation_params, "evaluation").instances
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
        pred_instances=mask_instances(test_predictions, instance_cfg),
    )


def build_report(
    trained_models: dict[str, dict[str, Any]],
    test_summary: dict[str, Any],
    test_metrics_per_image: pd.DataFrame,
    model_registration: dict[str, Any],
    learning_curves,
    metric_distribution,
    test_overlays,
    params: dict[str, Any],
    retraining_record: dict[str, Any] | None = None,
) -> tuple[str, str]:
    """Markdown and self-contained HTML report of the run.

    ``retraining_record`` is the latest ``sa2-pipeline retrain`` record; the report shows it
    only when that retrain registered this report's model (same MLflow run).

    Returns:
        ``(report_markdown, report_html)``.
    """
    from sa2_pipeline.metrics.summary import primary_rows
    from sa2_pipeline.reporting import report

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
        provenance=collect_provenance(
            Path.cwd(), cfg.dataset, test_summary.get("test_set_id"),
            bundle.get("metadata", {}).get("mlflow_run_id"),
            data_version=model_registration.get("data_version")),
        published=published_for(cfg.dataset),
        retraining=_about_this_model(retraining_record, model_registration),
        figures={
            "test_overlays": test_overlays,
            "metric_distribution": metric_distribution,
            "learning_curves": learning_curves,
        },
    )


def _about_this_model(record: dict[str, Any] | None,
                      registration: dict[str, Any]) -> dict[str, Any] | None:
    """The retraining record when it describes the model this report is about."""
    run_id = (record or {}).get("registration", {}).get("run_id")
    return record if run_id and run_id == registration.get("run_id") else None
