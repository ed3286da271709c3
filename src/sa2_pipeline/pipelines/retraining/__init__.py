"""``kedro run --pipelines retraining --env <dataset>``: the retraining sequence as a pipeline."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
