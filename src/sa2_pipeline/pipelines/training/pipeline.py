"""Wiring of the training pipeline."""

from kedro.pipeline import Pipeline, node, pipeline

from .nodes import fit_models


def create_pipeline(**kwargs) -> Pipeline:  # noqa: ARG001
    return pipeline(
        [
            node(
                fit_models,
                inputs=[
                    "model_input_trainval",
                    "splits",
                    "params:model",
                    "params:baselines",
                    "params:training",
                    "params:data_processing",
                    "params:evaluation",
                    "params:data_ingestion",
                ],
                outputs=["trained_models", "training_history", "training_run"],
                name="fit_models",
            ),
        ]
    )
