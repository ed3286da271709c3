"""Report figures (matplotlib, headless). Each function returns a Figure and closes nothing;
the caller (the catalog's MatplotlibWriter) saves and closes it."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_learning_curves(history: pd.DataFrame, title: str = "Learning curves"):
    """Training loss and validation Dice per epoch, one line per (model, fold); the
    selected (best validation) epoch of each run is marked."""
    plt = _plt()
    fig, (ax_loss, ax_dice) = plt.subplots(1, 2, figsize=(11, 3.8), constrained_layout=True)
    groups = history.groupby(["model", "fold"], sort=False) if "model" in history else [
        (("model", 0), history)]
    for k, ((model, fold), run) in enumerate(groups):
        color = f"C{k % 10}"
        label = f"{model} fold {fold}"
        ax_loss.plot(run["epoch"], run["train_loss"], color=color, marker="o", ms=2,
                     label=label)
        ax_dice.plot(run["epoch"], run["val_dice"], color=color, marker="o", ms=2, label=label)
        if run["is_best"].any():
            best = run.loc[run["is_best"]].iloc[-1]
            ax_dice.scatter([best["epoch"]], [best["val_dice"]], color=color, marker="*",
                            s=90, zorder=3)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("training loss")
    ax_dice.set_xlabel("epoch")
    ax_dice.set_ylabel("validation Dice (* = selected)")
    ax_dice.set_ylim(0, 1)
    ax_dice.legend(loc="lower right", fontsize=7)
    fig.suptitle(title)
    return fig


def plot_metric_distribution(per_image: pd.DataFrame, title: str = "Test metrics per image"):
    """Box plot with every image as a point: one box per (model, metric) when the table
    has a ``model`` column (each model's final member: its fold ensemble, or its only
    fold), else one per metric column."""
    plt = _plt()
    cols = [c for c in per_image.columns if c in ("dice", "iou")] or [
        c for c in per_image.columns if c.startswith(("dice", "iou"))]
    if "model" in per_image:
        data, labels = [], []
        for model, frame in per_image.groupby("model", sort=False):
            final = "ensemble" if (frame["member"] == "ensemble").any() else frame["member"].iloc[0]
            frame = frame[frame["member"] == final]
            for c in cols:
                data.append(frame[c].dropna().to_numpy())
                labels.append(f"{model}\n{c}")
        n = len(per_image["id"].unique())
    else:
        data = [per_image[c].dropna().to_numpy() for c in cols]
        labels, n = cols, len(per_image)
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(data), 3.8), constrained_layout=True)
    ax.boxplot(data, showmeans=True)
    ax.set_xticks(range(1, len(data) + 1), labels)
    rng = np.random.default_rng(0)
    for k, values in enumerate(data, start=1):
        ax.scatter(k + rng.uniform(-0.12, 0.12, len(values)), values, s=12, alpha=0.6)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("score")
    ax.set_title(f"{title} (n = {n})")
    return fig


def pick_overlay_ids(per_image: pd.DataFrame, n: int, metric: str = "dice") -> list[str]:
    """Worst to best, evenly spaced: the report shows failures as well as successes."""
    ordered = per_image.sort_values(metric)["id"].tolist()
    if n >= len(ordered):
        return ordered
    idx = np.unique(np.linspace(0, len(ordered) - 1, n).round().astype(int))
    return [ordered[i] for i in idx]


def plot_overlays(
    images: Mapping[str, np.ndarray],
    masks: Mapping[str, np.ndarray],
    predictions: Mapping[str, np.ndarray],
    per_image: pd.DataFrame,
    n: int = 4,
):
    """Image | ground truth outline (green) | prediction outline (magenta), with Dice."""
    from skimage.segmentation import find_boundaries

    plt = _plt()
    ids = pick_overlay_ids(per_image, n, "dice" if "dice" in per_image else per_image.columns[1])
    scores = per_image.set_index("id")
    fig, axes = plt.subplots(len(ids), 2, figsize=(7, 3.4 * len(ids)), squeeze=False,
                             constrained_layout=True)
    for row, image_id in zip(axes, ids, strict=True):
        image = images[image_id]
        truth, pred = masks[image_id], predictions[image_id]
        row[0].imshow(image)
        row[0].set_title(f"{image_id}", fontsize=8)
        overlay = image.copy()
        overlay[find_boundaries(truth, mode="inner")] = (0, 220, 0)
        overlay[find_boundaries(pred, mode="inner")] = (255, 0, 255)
        row[1].imshow(overlay)
        label = ", ".join(f"{c} {scores.loc[image_id, c]:.3f}" for c in ("dice", "iou")
                          if c in scores.columns)
        row[1].set_title(f"truth (green) vs prediction (magenta): {label}", fontsize=8)
        for ax in row:
            ax.set_axis_off()
    return fig
