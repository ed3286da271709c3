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
    selected (best validation) epoch of each run is marked.

    Each model's training loss gets its own panel (its own y scale): it is the loss that
    model was trained with (SA2-Net's sums its deep-supervision heads), so losses are not
    comparable across models. Validation Dice, the same measure for every model, shares
    one panel. Every panel has a legend naming the model, fold and train/val.
    """
    plt = _plt()
    groups = (
        list(history.groupby(["model", "fold"], sort=False))
        if "model" in history
        else [(("model", 0), history)]
    )
    models = list(dict.fromkeys(model for (model, _), _ in groups))
    fig, axes = plt.subplots(
        1, len(models) + 1, figsize=(4.2 * (len(models) + 1), 3.8), constrained_layout=True,
        squeeze=False,
    )
    loss_axes = dict(zip(models, axes[0][:-1], strict=True))
    ax_dice = axes[0][-1]
    for k, ((model, fold), run) in enumerate(groups):
        color = f"C{k % 10}"
        ax_loss = loss_axes[model]
        ax_loss.plot(run["epoch"], run["train_loss"], color=color, marker="o", ms=2,
                     label=f"{model} fold {fold} (train)")
        ax_dice.plot(run["epoch"], run["val_dice"], color=color, marker="o", ms=2,
                     label=f"{model} fold {fold} (val)")
        if run["is_best"].any():
            best = run.loc[run["is_best"]].iloc[-1]
            ax_dice.scatter(
                [best["epoch"]], [best["val_dice"]], color=color, marker="*", s=90, zorder=3
            )
    for model, ax_loss in loss_axes.items():
        ax_loss.set_title(f"{model}: its own training loss", fontsize=9)
        ax_loss.set_xlabel("epoch")
        ax_loss.set_ylabel(f"{model} training loss")
        ax_loss.legend(loc="upper right", fontsize=7)
    ax_dice.set_title("validation Dice (all models)", fontsize=9)
    ax_dice.set_xlabel("epoch")
    ax_dice.set_ylabel("validation Dice (* = selected)")
    ax_dice.set_ylim(0, 1)
    ax_dice.legend(loc="lower right", fontsize=7)
    fig.suptitle(f"{title}. Each loss panel is that model's own training loss: losses are "
                 "not comparable across models", fontsize=10)
    return fig


#: Metrics in [0, 1] drawn in the distribution figure, when the table has them.
DISTRIBUTION_METRICS = ("dice", "iou", "aji", "pq", "obj_f1", "boundary_f1")


def plot_metric_distribution(per_image: pd.DataFrame, title: str = "Test metrics per image"):
    """Box plot with every image as a point: one box per (model, metric) when the table
    has a ``model`` column (each model's final member: its fold ensemble, or its only
    fold), else one per metric column."""
    plt = _plt()
    cols = [c for c in DISTRIBUTION_METRICS if c in per_image.columns] or [
        c for c in per_image.columns if c.startswith(("dice", "iou"))
    ]
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
    fig, ax = plt.subplots(figsize=(min(2 + 0.9 * len(data), 16), 3.8), constrained_layout=True)
    ax.boxplot(data, showmeans=True)
    ax.set_xticks(range(1, len(data) + 1), labels)
    rng = np.random.default_rng(0)
    for k, values in enumerate(data, start=1):
        ax.scatter(k + rng.uniform(-0.12, 0.12, len(values)), values, s=12, alpha=0.6)
    ax.set_ylim(*data_limits(data))
    ax.set_ylabel("score (axis fitted to the data)")
    ax.set_title(f"{title} (n = {n})")
    return fig


def data_limits(data: list[np.ndarray], margin: float = 0.08) -> tuple[float, float]:
    """Axis limits spanning every finite value with ``margin`` (a fraction of the range) on
    each side, so boxes of scores that sit close together are not squashed; (0, 1) when
    there are no values."""
    values = np.concatenate([np.asarray(d, dtype=float).ravel() for d in data] or [[]])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    low, high = float(values.min()), float(values.max())
    pad = margin * (high - low) or 0.01 * max(abs(high), 1.0)
    return low - pad, high + pad


def pick_worst_and_best(
    per_image: pd.DataFrame, n_worst: int, n_best: int, metric: str = "dice"
) -> list[tuple[str, str]]:
    """``[(id, "worst k" | "best k"), ...]``: the lowest then the highest ``metric`` images.

    Images without a value of ``metric`` (NaN) are skipped; an image is listed once even
    when the test set is smaller than ``n_worst + n_best``.
    """
    ordered = per_image.dropna(subset=[metric]).sort_values([metric, "id"])["id"].tolist()
    worst = ordered[:n_worst]
    best = [i for i in reversed(ordered) if i not in worst][:n_best]
    return [(i, f"worst {k + 1}") for k, i in enumerate(worst)] + [
        (i, f"best {k + 1}") for k, i in enumerate(best)
    ]


#: Error-map colours (RGB): false positive, false negative, wrong class, outlines.
FP_COLOUR = (230, 40, 40)
FN_COLOUR = (40, 110, 255)
WRONG_CLASS_COLOUR = (255, 150, 0)
TRUE_OUTLINE = (0, 220, 0)
PRED_OUTLINE = (255, 235, 0)


def error_map(
    image: np.ndarray,
    truth: np.ndarray,
    pred: np.ndarray,
    true_instances: np.ndarray | None = None,
    pred_instances: np.ndarray | None = None,
) -> np.ndarray:
    """RGB image with false positives, false negatives and wrong classes tinted, and the
    outlines of the true (green) and predicted (yellow) objects drawn on top.

    Without instance maps the outlines are those of the masks' regions.
    """
    from skimage.segmentation import find_boundaries

    out = np.asarray(image, dtype=np.float32)
    if out.ndim == 2:
        out = np.repeat(out[..., None], 3, axis=2)
    out = out[..., :3].copy()
    truth, pred = np.asarray(truth), np.asarray(pred)
    regions = (
        ((pred > 0) & (truth == 0), FP_COLOUR),
        ((truth > 0) & (pred == 0), FN_COLOUR),
        ((truth > 0) & (pred > 0) & (truth != pred), WRONG_CLASS_COLOUR),
    )
    for where, colour in regions:
        out[where] = 0.35 * out[where] + 0.65 * np.asarray(colour, dtype=np.float32)
    true_labels = truth if true_instances is None else true_instances
    pred_labels = pred if pred_instances is None else pred_instances
    out[find_boundaries(true_labels, mode="inner")] = TRUE_OUTLINE
    out[find_boundaries(pred_labels, mode="inner")] = PRED_OUTLINE
    return np.clip(out, 0, 255).astype(np.uint8)


def _caption(scores: pd.Series) -> str:
    names = ("dice", "aji", "pq", "obj_f1", "hd95")
    return ", ".join(f"{c} {scores[c]:.3f}" for c in names if c in scores and pd.notna(scores[c]))


def _legend(fig) -> None:
    from matplotlib.patches import Patch

    entries = (
        (FP_COLOUR, "false positive"),
        (FN_COLOUR, "false negative"),
        (WRONG_CLASS_COLOUR, "wrong class"),
        (TRUE_OUTLINE, "true object outline"),
        (PRED_OUTLINE, "predicted object outline"),
    )
    handles = [Patch(color=np.asarray(c) / 255, label=label) for c, label in entries]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=7)


def plot_error_maps(
    images: Mapping[str, np.ndarray],
    masks: Mapping[str, np.ndarray],
    predictions: Mapping[str, np.ndarray],
    per_image: pd.DataFrame,
    n_worst: int = 2,
    n_best: int = 2,
    metric: str = "dice",
    true_instances: Mapping[str, np.ndarray] | None = None,
    pred_instances: Mapping[str, np.ndarray] | None = None,
):
    """The worst and best test images by ``metric``: image | error map with outlines."""
    plt = _plt()
    picked = pick_worst_and_best(per_image, n_worst, n_best, metric)
    scores = per_image.set_index("id")
    fig, axes = plt.subplots(
        max(len(picked), 1),
        2,
        figsize=(7, 3.4 * max(len(picked), 1) + 0.4),
        squeeze=False,
        constrained_layout=True,
    )
    for row, (image_id, rank) in zip(axes, picked, strict=False):
        image = images[image_id]
        true_inst = None if true_instances is None else true_instances.get(image_id)
        pred_inst = None if pred_instances is None else pred_instances.get(image_id)
        row[0].imshow(image)
        row[0].set_title(f"{rank}: {image_id}", fontsize=8)
        row[1].imshow(
            error_map(image, masks[image_id], predictions[image_id], true_inst, pred_inst)
        )
        row[1].set_title(_caption(scores.loc[image_id]), fontsize=8)
    for ax in axes.ravel():
        ax.set_axis_off()
    _legend(fig)
    fig.get_layout_engine().set(rect=(0, 0.04, 1, 0.96))
    return fig
