"""Wiring of the training pipeline."""

from kedro.pipeline import Pipeline, node, pipeline

from .nodes import fit_model


def create_pipeline(**kwargs) -> Pipeline:  # noqa: ARG001
    return pipeline(
        [
            node(
                fit_model,
                inputs=[
                    "model_input_train",
                    "model_input_val",
                    "params:model",
                    "params:training",
                    "params:data_processing",
                    "params:evaluation",
                ],
                outputs=["trained_model", "training_history", "training_run"],
                name="fit_model",
            ),
        ]
    )
