"""Test-set summary: fold mean +- std and the final member per model, the frozen test-set id.

Input is the per-image frame :func:`sa2_pipeline.inference.evaluate.evaluate_test_set`
writes: one row per (``model``, ``member``, ``id``) with numeric metric columns (Dice,
IoU, boundary and object metrics; object counts ``n_*`` are not summarised). Metric
values may be NaN where undefined (docs/metrics.md); means skip them. A member is a fold
model (``fold0``...) or ``ensemble`` (the mean of a model's folds). A model's *final*
member is its ensemble, or its only fold.

numpy and pandas only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["flat_metrics", "frozen_test_set_id", "primary_rows", "summarise_test_set"]


def _model_entry(frame: pd.DataFrame, metrics: list[str]) -> dict[str, Any]:
    means = frame.groupby("member")[metrics].mean()
    folds = means.loc[[m for m in means.index if m != "ensemble"]]
    final = "ensemble" if "ensemble" in means.index else folds.index[0]
    return {
        "members": {m: {c: float(v) for c, v in means.loc[m].items()} for m in means.index},
        "fold_mean": {c: float(folds[c].mean()) for c in metrics},
        "fold_std": {c: float(folds[c].std(ddof=0)) for c in metrics},
        "final_member": final,
        "final": {c: float(means.loc[final, c]) for c in metrics},
    }


def summarise_test_set(per_image: pd.DataFrame, primary: str) -> dict[str, Any]:
    """Summarise the per-image scores of every model and member.

    Args:
        per_image: One row per (model, member, image), as described in the module.
        primary: The model whose final member the promotion gate compares.

    Returns:
        ``{"primary_model", "models": {name: {"members", "fold_mean", "fold_std",
        "final_member", "final"}}, "test_<metric>", "test_<metric>_std",
        "test_<metric>_median"}``; the ``test_*`` keys describe the primary model's final
        member over the test images (population std).
    """
    from sa2_pipeline.metrics.comparison import metric_columns

    metrics = metric_columns(per_image)
    summary: dict[str, Any] = {"primary_model": primary, "models": {}}
    for name, frame in per_image.groupby("model", sort=False):
        entry = _model_entry(frame, metrics)
        summary["models"][name] = entry
        if name == primary:
            final_rows = frame[frame["member"] == entry["final_member"]]
            for c in metrics:
                summary[f"test_{c}"] = float(final_rows[c].mean())
                summary[f"test_{c}_std"] = float(final_rows[c].std(ddof=0))
                summary[f"test_{c}_median"] = float(final_rows[c].median())
    return summary


def flat_metrics(summary: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """The summary as flat MLflow metrics ``{name: {"value": v, "step": 0}}``.

    Names: the summary's float entries (``test_dice``...), then
    ``<model>.<member>.<metric>`` and ``<model>.folds.<metric>_{mean,std}``.
    """
    flat = {k: v for k, v in summary.items() if isinstance(v, float)}
    for name, entry in summary["models"].items():
        for member, values in entry["members"].items():
            flat.update({f"{name}.{member}.{c}": v for c, v in values.items()})
        flat.update({f"{name}.folds.{c}_mean": v for c, v in entry["fold_mean"].items()})
        flat.update({f"{name}.folds.{c}_std": v for c, v in entry["fold_std"].items()})
    # An undefined value (e.g. HD95 of a model that predicted nothing) is not logged.
    return {k: {"value": float(v), "step": 0} for k, v in flat.items() if np.isfinite(v)}


def primary_rows(per_image: pd.DataFrame, summary: Mapping[str, Any]) -> pd.DataFrame:
    """Per-image rows of the primary model's final member, without the model/member columns."""
    primary = summary["primary_model"]
    final = summary["models"][primary]["final_member"]
    rows = per_image[(per_image["model"] == primary) & (per_image["member"] == final)]
    return rows.drop(columns=["model", "member"]).reset_index(drop=True)


def frozen_test_set_id(model_input_test: Mapping[str, Any]) -> str:
    """A short hash of the test images' ids and masks: "the same frozen test set"."""
    h = hashlib.sha256()
    for image_id in sorted(model_input_test["masks"]):
        h.update(image_id.encode())
        h.update(np.ascontiguousarray(model_input_test["masks"][image_id]).data)
    return h.hexdigest()[:16]
