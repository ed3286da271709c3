"""Intervals for every summary metric and paired comparisons between models.

Operates on the per-image table of evaluation (one row per model, member and image). Each
number carries ``n``: the test images behind it (images whose value is NaN, e.g. HD95 of an
empty prediction, are left out of that metric).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd

from sa2_pipeline.metrics.stats import DEFAULT_RESAMPLES, bootstrap_ci, paired_comparison

__all__ = ["LOWER_IS_BETTER", "compare_models", "higher_is_better", "intervals", "metric_columns"]

#: Metric name prefixes where a smaller value is better.
LOWER_IS_BETTER = ("hd95",)
_KEYS = ("model", "member", "id")


def higher_is_better(metric: str) -> bool:
    return not metric.startswith(LOWER_IS_BETTER)


def metric_columns(per_image: pd.DataFrame) -> list[str]:
    """Numeric metric columns (object counts ``n_*`` and key columns excluded)."""
    numeric = per_image.select_dtypes(include="number").columns
    return [c for c in numeric if c not in _KEYS and not c.startswith("n_")]


def intervals(
    frame: pd.DataFrame,
    columns: Iterable[str],
    confidence: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """``{metric: {estimate, low, high, confidence, n, method}}``: interval of the mean."""
    return {
        c: bootstrap_ci(
            frame[c].to_numpy(dtype=float),
            confidence=confidence,
            n_resamples=n_resamples,
            seed=seed,
        ).as_dict()
        for c in columns
    }


def compare_models(
    primary: pd.DataFrame,
    baseline: pd.DataFrame,
    columns: list[str],
    confidence: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Paired comparison (primary - baseline) per metric on the images both scored.

    Args:
        primary: Rows of the primary model's final member, with an ``id`` column.
        baseline: Rows of one baseline's final member.
        columns: Metric columns to compare.

    Returns:
        ``{metric: PairedComparison fields + higher_is_better}``.

    Raises:
        ValueError: If the two share no image id.
        KeyError: If a column is missing from either frame.
    """
    joined = primary[["id", *columns]].merge(
        baseline[["id", *columns]], on="id", how="inner", suffixes=("_a", "_b")
    )
    if joined.empty:
        raise ValueError("the two models share no test image: they cannot be compared pairwise")
    result: dict[str, dict[str, Any]] = {}
    for c in columns:
        comparison = paired_comparison(
            joined[f"{c}_a"].to_numpy(dtype=float),
            joined[f"{c}_b"].to_numpy(dtype=float),
            confidence=confidence,
            n_resamples=n_resamples,
            seed=seed,
        )
        result[c] = {**comparison.as_dict(), "higher_is_better": higher_is_better(c)}
    return result


def add_uncertainty(
    summary: dict[str, Any],
    per_image: pd.DataFrame,
    confidence: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """Add intervals and paired comparisons to an evaluation summary, in place.

    ``summary`` is evaluation's: ``primary_model`` and ``models[name]["final_member"]``.
    Adds ``models[name]["intervals"]`` (every metric column of the final member),
    ``comparisons[baseline]`` (primary - baseline, every shared metric) and, for the primary
    model, flat ``test_<metric>_ci_low`` / ``_ci_high`` / ``_n`` entries.

    Returns:
        The same ``summary``.
    """
    columns = metric_columns(per_image)
    finals: dict[str, pd.DataFrame] = {}
    for name, entry in summary["models"].items():
        rows = per_image[
            (per_image["model"] == name) & (per_image["member"] == entry["final_member"])
        ]
        finals[name] = rows
        entry["intervals"] = intervals(rows, columns, confidence, n_resamples, seed)
    primary = summary["primary_model"]
    for metric, ci in summary["models"][primary]["intervals"].items():
        summary[f"test_{metric}_ci_low"] = ci["low"]
        summary[f"test_{metric}_ci_high"] = ci["high"]
        summary[f"test_{metric}_n"] = ci["n"]
    summary["comparisons"] = {
        name: compare_models(finals[primary], rows, columns, confidence, n_resamples, seed)
        for name, rows in finals.items()
        if name != primary
    }
    summary["confidence"] = confidence
    return summary
