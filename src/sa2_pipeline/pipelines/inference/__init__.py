"""``kedro run --pipelines inference``: segment every image in a folder (not in __default__)."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
