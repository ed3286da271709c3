"""Dataset fingerprint, leakage-free splits and cached model inputs."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from sa2_pipeline.config import ProcessingConfig, parse

logger = logging.getLogger(__name__)


def compute_fingerprint(
    manifest: pd.DataFrame, images: dict[str, np.ndarray], masks: dict[str, np.ndarray]
) -> dict[str, Any]:
    """Sizes, intensity statistics and foreground fraction (nnU-Net's "fingerprint").

    Intensity statistics use the non-test images only, so nothing about the test set can
    leak into preprocessing decisions.
    """
    train_ids = manifest.loc[manifest["split"] != "test", "id"].tolist()
    heights = manifest["height"].to_numpy()
    widths = manifest["width"].to_numpy()
    pixels = np.concatenate([images[i].reshape(-1, images[i].shape[-1]) for i in train_ids])
    classes = sorted({int(v) for m in masks.values() for v in np.unique(m)})
    fg = np.array([float((masks[i] > 0).mean()) for i in manifest["id"]])
    return {
        "n_images": int(len(manifest)),
        "n_by_split": {k: int(v) for k, v in manifest["split"].value_counts().items()},
        "height": _stats(heights),
        "width": _stats(widths),
        "channel_mean": [float(x) for x in pixels.mean(axis=0)],
        "channel_std": [float(x) for x in pixels.std(axis=0)],
        "foreground_fraction": _stats(fg),
        "label_values": classes,
    }


def split_dataset(manifest: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
    """Assign every image its official split and, for K-fold, its fold.

    Images whose official split is ``test`` are never given a fold. When the dataset
    defines a fixed validation split (ISIC 2018, ACDC: manifest rows with split ``val``)
    that split validates and there is one fold. Otherwise the ``train`` images are divided
    into ``n_folds`` folds by a seeded, shuffled K-fold over their sorted ids (the release:
    ``KFold(5, shuffle=True, random_state=999)``); with a ``group`` column (e.g. the patient)
    all images of a group share a fold.

    Returns:
        A frame with columns ``id``, ``split`` (train / val / test) and ``fold``: the fold
        a train image validates in (``-1`` for val and test rows).
    """
    from sklearn.model_selection import KFold

    cfg = parse(ProcessingConfig, params, "data_processing")
    unknown = sorted(set(manifest["split"]) - {"train", "val", "test"})
    if unknown:
        raise ValueError(f"manifest has unknown split values {unknown}; allowed: train, val, test")
    frame = manifest[["id", "split"]].copy()
    frame["fold"] = -1
    train = frame["split"] == "train"
    if (frame["split"] == "val").any():
        frame.loc[train, "fold"] = -1  # the fixed validation split is used for fold 0
    else:
        has_groups = "group" in manifest and manifest.loc[train, "group"].fillna("").ne("").any()
        keys = manifest.loc[train, "group"] if has_groups else manifest.loc[train, "id"]
        units = sorted(set(keys))
        if len(units) < cfg.n_folds:
            raise ValueError(
                f"data_processing.n_folds = {cfg.n_folds} but only {len(units)} non-test "
                f"{'groups' if has_groups else 'images'} are in the manifest; lower n_folds "
                "or add images"
            )
        kfold = KFold(n_splits=cfg.n_folds, shuffle=True, random_state=cfg.split_seed)
        fold_of = {}
        for k, (_, val_idx) in enumerate(kfold.split(units)):
            fold_of.update({units[i]: k for i in val_idx})
        frame.loc[train, "fold"] = [fold_of[key] for key in keys]
    frame = frame.sort_values(["split", "id"], kind="stable").reset_index(drop=True)
    logger.info("splits: %s; folds: %s", frame["split"].value_counts().to_dict(),
                frame.loc[frame["fold"] >= 0, "fold"].value_counts().sort_index().to_dict())
    return frame


def fold_ids(splits: pd.DataFrame, fold: int) -> tuple[list[str], list[str]]:
    """``(train_ids, val_ids)`` of one fold; a fixed validation split serves fold 0 only."""
    if (splits["split"] == "val").any():
        if fold != 0:
            raise ValueError(f"this dataset has a fixed validation split: only fold 0 exists, "
                             f"got fold {fold}")
        return (sorted(splits.loc[splits["split"] == "train", "id"]),
                sorted(splits.loc[splits["split"] == "val", "id"]))
    train = splits[splits["split"] == "train"]
    n_folds = int(train["fold"].max()) + 1
    if not 0 <= fold < n_folds:
        raise ValueError(f"fold {fold} does not exist; the splits have folds 0..{n_folds - 1}")
    return (sorted(train.loc[train["fold"] != fold, "id"]),
            sorted(train.loc[train["fold"] == fold, "id"]))


def build_model_inputs(
    images: dict[str, np.ndarray],
    masks: dict[str, np.ndarray],
    splits: pd.DataFrame,
    params: dict[str, Any],
) -> tuple[dict, dict]:
    """Cache the arrays training and evaluation consume.

    ``model_input_trainval`` holds every non-test image (each fold picks its train and
    validation ids from ``splits``): full size in ``native`` mode, resized to ``resize_to``
    in ``resize`` mode as the paper does. ``model_input_test`` stays at native resolution:
    evaluation predicts it as a user's image would be, and scores it at its true size
    (plus, in resize mode, at the paper's resized size).

    Returns:
        Two ``{"images": {id: arr}, "masks": {id: arr}}`` bundles: trainval and test.
    """
    cfg = parse(ProcessingConfig, params, "data_processing")
    ids = set(splits["id"])
    missing = sorted((ids - set(images)) | (ids - set(masks)))
    if missing:
        raise KeyError(f"ids in the splits without ingested image or mask: {missing}")

    # The release's mask resize (bilinear, then > 0) is for binary masks; class-index
    # masks are resized with nearest neighbour so no label is invented.
    mode = "nearest" if max(int(m.max(initial=0)) for m in masks.values()) > 1 else (
        "bilinear_threshold")

    def bundle(selected: pd.Series, resize: bool) -> dict[str, dict[str, np.ndarray]]:
        out: dict[str, dict[str, np.ndarray]] = {"images": {}, "masks": {}}
        for i in selected:
            image, mask = images[i], masks[i]
            if resize:
                from sa2_pipeline.dataloading.dataset import resize_pair

                image, mask = resize_pair(image, mask, cfg.resize_to, mask_mode=mode)
            out["images"][i], out["masks"][i] = image, mask
        return out

    trainval = splits.loc[splits["split"] != "test", "id"]
    test = splits.loc[splits["split"] == "test", "id"]
    if test.empty:
        raise ValueError("the manifest has no test images: the official test split is required")
    return bundle(trainval, cfg.mode == "resize"), bundle(test, False)


def _stats(values: np.ndarray) -> dict[str, float]:
    return {
        "min": float(np.min(values)),
        "median": float(np.median(values)),
        "max": float(np.max(values)),
        "mean": float(np.mean(values)),
    }
