"""Wiring of the data_processing pipeline."""

from kedro.pipeline import Pipeline, node, pipeline

from .nodes import build_model_inputs, compute_fingerprint, split_dataset


def create_pipeline(**kwargs) -> Pipeline:  # noqa: ARG001
    return pipeline(
        [
            node(
                compute_fingerprint,
                inputs=["manifest", "ingested_images", "ingested_masks"],
                outputs="dataset_fingerprint",
                name="compute_fingerprint",
            ),
            node(
                split_dataset,
                inputs=["manifest", "params:data_processing"],
                outputs="splits",
                name="split_dataset",
            ),
            node(
                build_model_inputs,
                inputs=["ingested_images", "ingested_masks", "splits", "params:data_processing",
                        "ingested_instances"],
                outputs=["model_input_trainval", "model_input_test"],
                name="build_model_inputs",
            ),
        ]
    )
