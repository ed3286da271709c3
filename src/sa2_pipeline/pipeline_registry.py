"""Project pipelines: one per stage, ``__default__`` is their sum."""

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

STAGES = ("data_ingestion", "data_processing", "training", "evaluation", "reporting")


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines.

    Returns:
        A mapping from pipeline names to ``Pipeline`` objects.
    """
    pipelines = find_pipelines(raise_errors=True)
    # `kedro run --pipelines <name>` loads only that pipeline; __default__ needs them all.
    if all(name in pipelines for name in STAGES):
        pipelines["__default__"] = sum(pipelines[name] for name in STAGES)
    return pipelines
