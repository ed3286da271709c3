"""Figures and the run report (logged to MLflow through the catalog)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from sa2_pipeline.config import ReportingConfig, parse


def plot_learning_curves(training_history: pd.DataFrame):
    """Loss, validation Dice and learning rate per epoch."""
    from sa2_pipeline.reporting.figures import plot_learning_curves as plot

    return plot(training_history)


def plot_metric_distribution(test_metrics_per_image: pd.DataFrame):
    """Distribution of per-image test Dice and IoU."""
    from sa2_pipeline.reporting.figures import plot_metric_distribution as plot

    return plot(test_metrics_per_image)


def plot_test_overlays(
    model_input_test: dict,
    test_predictions: dict[str, np.ndarray],
    test_metrics_per_image: pd.DataFrame,
    test_summary: dict[str, Any],
    params: dict[str, Any],
):
    """The primary model's predictions vs ground truth, test images from worst to best."""
    from sa2_pipeline.metrics.summary import primary_rows
    from sa2_pipeline.reporting.figures import plot_overlays

    cfg = parse(ReportingConfig, params, "reporting")
    return plot_overlays(model_input_test["images"], model_input_test["masks"],
                         test_predictions, primary_rows(test_metrics_per_image, test_summary),
                         n=cfg.n_overlays)


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

    cfg = parse(ReportingConfig, params, "reporting")
    bundle = report.primary_bundle(trained_models, test_summary["primary_model"])
    return report.build_report(
        title=cfg.title,
        model_meta={"mlflow_run_id": bundle.get("metadata", {}).get("mlflow_run_id")},
        model_desc=report.model_description(bundle),
        test_summary=test_summary,
        per_image=primary_rows(test_metrics_per_image, test_summary),
        runs=report.runs_table(trained_models),
        registration=model_registration,
        figures={"learning_curves": learning_curves,
                 "metric_distribution": metric_distribution,
                 "test_overlays": test_overlays},
    )
