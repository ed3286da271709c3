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
    """Training loss, validation Dice and learning rate per epoch; best epoch marked."""
    plt = _plt()
    fig, (ax_loss, ax_dice) = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True)
    epochs = history["epoch"].to_numpy()
    ax_loss.plot(epochs, history["train_loss"], marker="o", ms=3, label="train loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_lr = ax_loss.twinx()
    ax_lr.plot(epochs, history["lr"], color="grey", ls="--", lw=1, label="learning rate")
    ax_lr.set_ylabel("learning rate", color="grey")
    ax_loss.legend(loc="upper right")
    ax_dice.plot(epochs, history["val_dice"], marker="o", ms=3, color="C2", label="val Dice")
    if "val_iou" in history:
        ax_dice.plot(epochs, history["val_iou"], marker=".", ms=3, color="C4", label="val IoU")
    if history["is_best"].any():
        best = history.loc[history["is_best"]].iloc[-1]
        ax_dice.axvline(best["epoch"], color="C3", ls=":", lw=1)
        ax_dice.annotate(f"best {best['val_dice']:.3f} @ {int(best['epoch'])}",
                         (best["epoch"], best["val_dice"]), textcoords="offset points",
                         xytext=(4, -12), fontsize=8, color="C3")
    ax_dice.set_xlabel("epoch")
    ax_dice.set_ylabel("score")
    ax_dice.set_ylim(0, 1)
    ax_dice.legend(loc="lower right")
    fig.suptitle(title)
    return fig


def plot_metric_distribution(per_image: pd.DataFrame, title: str = "Test metrics per image"):
    """Box plot with every image as a point, one box per metric column."""
    plt = _plt()
    cols = [c for c in per_image.columns if c.startswith(("dice", "iou"))]
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(cols), 3.6), constrained_layout=True)
    data = [per_image[c].dropna().to_numpy() for c in cols]
    ax.boxplot(data, showmeans=True)
    ax.set_xticks(range(1, len(cols) + 1), cols)
    rng = np.random.default_rng(0)
    for k, values in enumerate(data, start=1):
        ax.scatter(k + rng.uniform(-0.12, 0.12, len(values)), values, s=12, alpha=0.6)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("score")
    ax.set_title(f"{title} (n = {len(per_image)})")
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
