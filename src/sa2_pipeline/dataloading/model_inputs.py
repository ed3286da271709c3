"""What the data_processing pipeline derives from the ingested images: the dataset
fingerprint and the cached model inputs.

numpy and pandas at import; the resize (OpenCV, torch) is imported when it is used.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["build_model_inputs", "dataset_fingerprint"]

Arrays = Mapping[str, np.ndarray]


def dataset_fingerprint(manifest: pd.DataFrame, images: Arrays, masks: Arrays) -> dict[str, Any]:
    """Sizes, intensity statistics and foreground fraction (nnU-Net's "fingerprint").

    Intensity statistics use the non-test images only, so nothing about the test set can
    leak into preprocessing decisions.
    """
    train_ids = manifest.loc[manifest["split"] != "test", "id"].tolist()
    pixels = np.concatenate([images[i].reshape(-1, images[i].shape[-1]) for i in train_ids])
    classes = sorted({int(v) for m in masks.values() for v in np.unique(m)})
    fg = np.array([float((masks[i] > 0).mean()) for i in manifest["id"]])
    return {
        "n_images": int(len(manifest)),
        "n_by_split": {k: int(v) for k, v in manifest["split"].value_counts().items()},
        "height": _stats(manifest["height"].to_numpy()),
        "width": _stats(manifest["width"].to_numpy()),
        "channel_mean": [float(x) for x in pixels.mean(axis=0)],
        "channel_std": [float(x) for x in pixels.std(axis=0)],
        "foreground_fraction": _stats(fg),
        "label_values": classes,
    }


def build_model_inputs(
    images: Arrays, masks: Arrays, splits: pd.DataFrame, *, resize_to: int | None,
    instances: Arrays | None = None,
) -> tuple[dict, dict]:
    """The arrays training and evaluation consume.

    The trainval bundle holds every non-test image (each fold picks its train and
    validation ids from ``splits``): full size, or resized to ``resize_to`` as the paper
    does. The test bundle stays at native resolution: evaluation predicts it as a user's
    image would be, and scores it at its true size. Test images with an instance map
    (``instances``, from ingestion) carry it in the test bundle's ``"instances"`` group,
    for the object metrics; training never sees it.

    Returns:
        Two ``{"images": {id: arr}, "masks": {id: arr}}`` bundles: trainval and test
        (plus ``"instances": {id: uint16 arr}`` when the dataset has instance labels).

    Raises:
        KeyError: If an id in the splits has no ingested image or mask.
        ValueError: If the splits hold no test image.
    """
    ids = set(splits["id"])
    missing = sorted((ids - set(images)) | (ids - set(masks)))
    if missing:
        raise KeyError(f"ids in the splits without ingested image or mask: {missing}")
    trainval = splits.loc[splits["split"] != "test", "id"]
    test = splits.loc[splits["split"] == "test", "id"]
    if test.empty:
        raise ValueError("the manifest has no test images: the official test split is required")
    # The release's mask resize (bilinear, then > 0) is for binary masks; class-index
    # masks are resized with nearest neighbour so no label is invented.
    mode = "nearest" if max(int(m.max(initial=0)) for m in masks.values()) > 1 else (
        "bilinear_threshold")
    test_bundle = _bundle(images, masks, test, None, mode)
    with_instances = {i: instances[i] for i in test if instances and i in instances}
    if with_instances:
        test_bundle["instances"] = with_instances
    return _bundle(images, masks, trainval, resize_to, mode), test_bundle


def _bundle(images: Arrays, masks: Arrays, ids: Iterable[str], resize_to: int | None,
            mode: str) -> dict[str, dict[str, np.ndarray]]:
    out: dict[str, dict[str, np.ndarray]] = {"images": {}, "masks": {}}
    for i in ids:
        image, mask = images[i], masks[i]
        if resize_to is not None:
            from sa2_pipeline.dataloading.dataset import resize_pair

            image, mask = resize_pair(image, mask, resize_to, mask_mode=mode)
        out["images"][i], out["masks"][i] = image, mask
    return out


def _stats(values: np.ndarray) -> dict[str, float]:
    return {
        "min": float(np.min(values)),
        "median": float(np.median(values)),
        "max": float(np.max(values)),
        "mean": float(np.mean(values)),
    }
