"""Wiring of the evaluation pipeline."""

from kedro.pipeline import Pipeline, node, pipeline

from .nodes import predict_test_set, register_model, score_test_set


def create_pipeline(**kwargs) -> Pipeline:  # noqa: ARG001
    return pipeline(
        [
            node(
                predict_test_set,
                inputs=["trained_model", "model_input_test", "params:evaluation"],
                outputs="test_predictions",
                name="predict_test_set",
            ),
            node(
                score_test_set,
                inputs=["test_predictions", "model_input_test", "trained_model"],
                outputs=["test_metrics_per_image", "test_summary", "test_metrics"],
                name="score_test_set",
            ),
            node(
                register_model,
                inputs=[
                    "trained_model",
                    "test_summary",
                    "model_input_test",
                    "params:registry",
                    "params:evaluation",
                ],
                outputs="model_registration",
                name="register_model",
            ),
        ]
    )
