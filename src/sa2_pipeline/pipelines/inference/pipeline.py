"""Wiring of the inference pipeline (registered, not part of ``__default__``)."""

from kedro.pipeline import Pipeline, node, pipeline

from .nodes import report_failures, segment_folder


def create_pipeline(**kwargs) -> Pipeline:  # noqa: ARG001
    return pipeline(
        [
            node(
                segment_folder,
                inputs=["params:inference", "params:registry"],
                outputs="inference_summary",
                name="segment_folder",
            ),
            node(
                report_failures,
                inputs="inference_summary",
                outputs=None,
                name="report_failures",
            ),
        ]
    )
