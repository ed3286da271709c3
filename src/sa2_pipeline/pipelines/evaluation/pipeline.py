"""Wiring of the evaluation pipeline."""

from kedro.pipeline import Pipeline, node, pipeline

from .nodes import evaluate_models, headline_metrics, register_model


def create_pipeline(**kwargs) -> Pipeline:  # noqa: ARG001
    return pipeline(
        [
            node(
                evaluate_models,
                inputs=["trained_models", "model_input_test", "params:model",
                        "params:evaluation"],
                outputs=["test_predictions", "test_metrics_per_image", "test_summary",
                         "test_metrics"],
                name="evaluate_models",
            ),
            node(headline_metrics, inputs="test_summary", outputs="dvc_metrics",
                 name="headline_metrics"),
            node(
                register_model,
                inputs=["trained_models", "test_summary", "test_metrics_per_image",
                        "model_input_test",
                        "params:registry", "params:evaluation"],
                outputs="model_registration",
                name="register_model",
            ),
        ]
    )
