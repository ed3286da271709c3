"""Wiring of the reporting pipeline."""

from kedro.pipeline import Pipeline, node, pipeline

from .nodes import build_report, plot_learning_curves, plot_metric_distribution, plot_test_overlays


def create_pipeline(**kwargs) -> Pipeline:  # noqa: ARG001
    return pipeline(
        [
            node(
                plot_learning_curves,
                "training_history",
                "figure_learning_curves",
                name="plot_learning_curves",
            ),
            node(
                plot_metric_distribution,
                "test_metrics_per_image",
                "figure_metric_distribution",
                name="plot_metric_distribution",
            ),
            node(
                plot_test_overlays,
                [
                    "model_input_test",
                    "test_predictions",
                    "test_metrics_per_image",
                    "test_summary",
                    "params:reporting",
                    "params:evaluation",
                ],
                "figure_test_overlays",
                name="plot_test_overlays",
            ),
            node(
                build_report,
                [
                    "trained_models",
                    "test_summary",
                    "test_metrics_per_image",
                    "model_registration",
                    "figure_learning_curves",
                    "figure_metric_distribution",
                    "figure_test_overlays",
                    "params:reporting",
                    "retraining_record",
                ],
                ["report_markdown", "report_html"],
                name="build_report",
            ),
        ]
    )
