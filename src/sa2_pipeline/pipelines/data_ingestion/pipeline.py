"""Wiring of the data_ingestion pipeline."""

from kedro.pipeline import Pipeline, node, pipeline

from .nodes import ingest_raw_dataset, prepare_raw_data


def create_pipeline(**kwargs) -> Pipeline:  # noqa: ARG001
    return pipeline(
        [
            node(
                prepare_raw_data,
                inputs="params:data_ingestion",
                outputs="raw_data_dir",
                name="prepare_raw_data",
            ),
            node(
                ingest_raw_dataset,
                inputs=["raw_data_dir", "params:data_ingestion", "params:model"],
                outputs=["manifest", "ingested_images", "ingested_masks", "ingested_instances"],
                name="ingest_raw_dataset",
            ),
        ]
    )
