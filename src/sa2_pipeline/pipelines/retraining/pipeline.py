"""Wiring of the retraining pipeline (not part of ``__default__``)."""

from kedro.pipeline import Pipeline, node, pipeline

from .nodes import run_retraining


def create_pipeline(**kwargs) -> Pipeline:  # noqa: ARG001
    return pipeline([node(run_retraining, inputs="kedro_run", outputs="retraining_outcome",
                          name="run_retraining")])
