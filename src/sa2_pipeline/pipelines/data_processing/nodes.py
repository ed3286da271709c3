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
    """Assign every image a fold and a split; the official test split is kept apart.

    Images whose official split is ``test`` are never given a fold. The others are divided
    into ``n_folds`` folds by a seeded, shuffled K-fold over their sorted ids (the release
    uses ``KFold(5, shuffle=True, random_state=999)``); fold ``params.fold`` validates.

    Returns:
        A frame with columns ``id``, ``split`` (train / val / test) and ``fold`` (-1 for test).
    """
    from sklearn.model_selection import KFold

    cfg = parse(ProcessingConfig, params, "data_processing")
    ids = sorted(manifest.loc[manifest["split"] != "test", "id"])
    test_ids = sorted(manifest.loc[manifest["split"] == "test", "id"])
    if len(ids) < cfg.n_folds:
        raise ValueError(
            f"data_processing.n_folds = {cfg.n_folds} but only {len(ids)} non-test images "
            "are in the manifest; lower n_folds or add images"
        )
    folds = np.full(len(ids), -1)
    kfold = KFold(n_splits=cfg.n_folds, shuffle=True, random_state=cfg.split_seed)
    for k, (_, val_idx) in enumerate(kfold.split(ids)):
        folds[val_idx] = k
    rows = [
        {"id": i, "split": "val" if f == cfg.fold else "train", "fold": int(f)}
        for i, f in zip(ids, folds, strict=True)
    ]
    rows += [{"id": i, "split": "test", "fold": -1} for i in test_ids]
    splits = pd.DataFrame(rows, columns=["id", "split", "fold"])
    logger.info("splits: %s (fold %d of %d)", splits["split"].value_counts().to_dict(),
                cfg.fold, cfg.n_folds)
    return splits


def build_model_inputs(
    images: dict[str, np.ndarray],
    masks: dict[str, np.ndarray],
    splits: pd.DataFrame,
    params: dict[str, Any],
) -> tuple[dict, dict, dict]:
    """Cache the arrays each stage consumes: train, validation and test bundles.

    ``native`` mode keeps full-size images (training samples patches from them);
    ``resize`` mode resizes train and validation images to ``resize_to`` as the paper
    does. The test set always stays at native resolution: evaluation predicts it with a
    sliding window and scores it at its true size.

    Returns:
        Three ``{"images": {id: arr}, "masks": {id: arr}}`` bundles.
    """
    cfg = parse(ProcessingConfig, params, "data_processing")
    missing = sorted(set(splits["id"]) - set(images) | set(splits["id"]) - set(masks))
    if missing:
        raise KeyError(f"ids in the splits without ingested image or mask: {missing}")

    def bundle(split: str, resize: bool) -> dict[str, dict[str, np.ndarray]]:
        ids = splits.loc[splits["split"] == split, "id"]
        out: dict[str, dict[str, np.ndarray]] = {"images": {}, "masks": {}}
        for i in ids:
            image, mask = images[i], masks[i]
            if resize:
                from sa2_pipeline.dataloading.dataset import resize_pair

                image, mask = resize_pair(image, mask, cfg.resize_to)
            out["images"][i], out["masks"][i] = image, mask
        return out

    resize = cfg.mode == "resize"
    return bundle("train", resize), bundle("val", resize), bundle("test", False)


def _stats(values: np.ndarray) -> dict[str, float]:
    return {
        "min": float(np.min(values)),
        "median": float(np.median(values)),
        "max": float(np.max(values)),
        "mean": float(np.mean(values)),
    }
