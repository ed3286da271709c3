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
    params: dict[str, Any],
):
    """Prediction vs ground truth outlines for test images from worst to best."""
    from sa2_pipeline.reporting.figures import plot_overlays

    cfg = parse(ReportingConfig, params, "reporting")
    return plot_overlays(model_input_test["images"], model_input_test["masks"],
                         test_predictions, test_metrics_per_image, n=cfg.n_overlays)


def build_report(
    trained_model: dict[str, Any],
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
    from sa2_pipeline.reporting.report import build_report as build

    cfg = parse(ReportingConfig, params, "reporting")
    desc = {"model": trained_model["model_name"], **trained_model["init_kwargs"],
            "input": trained_model.get("input_convention", {}).get("channel_order", "rgb")}
    return build(
        title=cfg.title,
        model_meta=trained_model.get("metadata", {}),
        model_desc=desc,
        test_summary=test_summary,
        per_image=test_metrics_per_image,
        registration=model_registration,
        figures={"learning_curves": learning_curves,
                 "metric_distribution": metric_distribution,
                 "test_overlays": test_overlays},
    )
