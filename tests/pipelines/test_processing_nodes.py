"""Splits keep the test set apart and reproduce the release's K-fold."""

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import KFold

from sa2_pipeline.pipelines.data_processing.nodes import (
    build_model_inputs,
    compute_fingerprint,
    split_dataset,
)
from sa2_pipeline.splits import fold_ids


def _manifest(n_train=10, n_test=4):
    rows = [{"id": f"tr{i:02d}", "split": "train", "height": 32, "width": 40}
            for i in range(n_train)]
    rows += [{"id": f"te{i}", "split": "test", "height": 32, "width": 40} for i in range(n_test)]
    return pd.DataFrame(rows)


def test_test_images_never_enter_training_or_validation():
    splits = split_dataset(_manifest(), {"n_folds": 5})
    test_rows = splits[splits["id"].str.startswith("te")]
    assert set(test_rows["split"]) == {"test"} and set(test_rows["fold"]) == {-1}
    for fold in range(5):
        train_ids, val_ids = fold_ids(splits, fold)
        assert not any(i.startswith("te") for i in train_ids + val_ids)
        assert not set(train_ids) & set(val_ids)


def test_folds_match_sklearn_kfold_with_the_release_seed():
    splits = split_dataset(_manifest(), {"n_folds": 5, "split_seed": 999})
    ids = sorted(f"tr{i:02d}" for i in range(10))
    for k, (_, val_idx) in enumerate(KFold(5, shuffle=True, random_state=999).split(ids)):
        expected = {ids[i] for i in val_idx}
        assert set(splits.loc[splits["fold"] == k, "id"]) == expected
    assert set(fold_ids(splits, 0)[1]) == set(splits.loc[splits["fold"] == 0, "id"])


def test_every_fold_validates_each_image_exactly_once():
    seen = []
    splits = split_dataset(_manifest(), {"n_folds": 5})
    for fold in range(5):
        seen += fold_ids(splits, fold)[1]
    assert sorted(seen) == sorted(f"tr{i:02d}" for i in range(10))


def test_too_few_images_for_the_folds_is_explained():
    with pytest.raises(ValueError, match="n_folds = 5 but only 3 non-test images"):
        split_dataset(_manifest(n_train=3), {"n_folds": 5})


def test_model_inputs_resize_mode_keeps_test_native():
    manifest = _manifest(n_train=5, n_test=2)
    rng = np.random.default_rng(0)
    images = {i: rng.integers(0, 255, (32, 40, 3), dtype=np.uint8) for i in manifest["id"]}
    masks = {i: (rng.random((32, 40)) > 0.7).astype(np.uint8) for i in manifest["id"]}
    splits = split_dataset(manifest, {"n_folds": 5})
    trainval, test = build_model_inputs(images, masks, splits,
                                        {"mode": "resize", "resize_to": 24, "n_folds": 5})
    assert {a.shape for a in trainval["images"].values()} == {(24, 24, 3)}
    assert len(trainval["images"]) == 5
    assert {a.shape for a in test["images"].values()} == {(32, 40, 3)}
    fingerprint = compute_fingerprint(manifest, images, masks)
    assert fingerprint["n_by_split"] == {"train": 5, "test": 2}
    assert fingerprint["label_values"] == [0, 1]
    assert len(fingerprint["channel_mean"]) == 3


def test_fixed_validation_split_is_honoured():
    manifest = _manifest(n_train=6, n_test=2)
    manifest.loc[manifest["id"].isin(["tr00", "tr01"]), "split"] = "val"
    splits = split_dataset(manifest, {"n_folds": 5})
    train_ids, val_ids = fold_ids(splits, 0)
    assert val_ids == ["tr00", "tr01"] and len(train_ids) == 4
    with pytest.raises(ValueError, match="only fold 0 exists"):
        fold_ids(splits, 1)


def test_groups_never_straddle_folds():
    manifest = _manifest(n_train=12, n_test=2)
    manifest["group"] = [f"p{i // 3}" for i in range(12)] + ["", ""]
    splits = split_dataset(manifest, {"n_folds": 4}).merge(manifest[["id", "group"]])
    train = splits[splits["split"] == "train"]
    assert (train.groupby("group")["fold"].nunique() == 1).all()
    assert train["fold"].nunique() == 4


def test_test_bundle_carries_instance_maps_of_test_images_only():
    ids = ["a", "b", "c"]
    images = {i: np.zeros((8, 8, 3), np.uint8) for i in ids}
    masks = {i: np.zeros((8, 8), np.uint8) for i in ids}
    instances = {i: np.full((8, 8), k + 1, np.uint16) for k, i in enumerate(ids)}
    splits = pd.DataFrame({"id": ids, "split": ["train", "test", "test"]})
    params = {"n_folds": 2, "mode": "native"}
    trainval, test = build_model_inputs(images, masks, splits, params, instances)
    assert "instances" not in trainval
    assert sorted(test["instances"]) == ["b", "c"]
    _, without = build_model_inputs(images, masks, splits, params, {})
    assert "instances" not in without
