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

__all__ = ["flat_metrics", "frozen_test_set_id", "headline_metrics", "primary_rows",
           "summarise_test_set"]


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


#: What ``dvc metrics show`` prints, in this order: the primary model's ensemble scores.
HEADLINE_METRICS = ("dice", "dice_ci_low", "dice_ci_high", "iou", "aji", "pq", "hd95")


def headline_metrics(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The few numbers a terminal shows per run (``metrics.json``, DVC's metrics file).

    The primary model's ensemble on the test set: Dice with its bootstrap interval, IoU,
    and AJI, PQ, HD95 where the test set has them; then the model's name and the number of
    test images. Everything else (every model, fold statistics, paired comparisons) stays
    in ``test_summary.json``, which ``dvc metrics show`` used to print as one line of
    several hundred columns.
    """
    out: dict[str, Any] = {"model": summary.get("primary_model")}
    for name in HEADLINE_METRICS:
        value = summary.get(f"test_{name}")
        if value is not None:
            out[name] = round(float(value), 4)
    n_images = summary.get("n_images", summary.get("test_dice_n"))
    if n_images is not None:
        out["n_images"] = int(n_images)
    return out


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
