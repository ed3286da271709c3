"""Segmentation metrics: per-image scoring, summaries and the frozen test-set id."""

from sa2_pipeline.metrics.segmentation import score

__all__ = ["score"]
