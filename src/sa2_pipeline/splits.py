"""Leakage-free train / validation / test splits and the K-fold assignment.

Pure functions over the manifest frame (pandas; scikit-learn is imported when folds are
drawn). The ``data_processing`` pipeline writes the splits with :func:`assign_folds`; the
training pipeline reads one fold back with :func:`fold_ids`.

Rules:

- an image whose official split is ``test`` never gets a fold;
- a dataset with an official validation split (manifest rows with split ``val``) has one
  fold: that split validates, the ``train`` rows train;
- otherwise the ``train`` images are divided by ``KFold(n_folds, shuffle=True,
  random_state=split_seed)`` over their sorted ids (the release's
  ``KFold(5, shuffle=True, random_state=999)``); with a non-empty ``group`` column (e.g. the
  patient) the K-fold runs over the sorted groups, so a group never straddles folds.
"""

from __future__ import annotations

import pandas as pd

__all__ = ["SPLITS", "assign_folds", "fold_ids"]

#: The official split names a manifest may use.
SPLITS = ("train", "val", "test")


def assign_folds(manifest: pd.DataFrame, n_folds: int, split_seed: int) -> pd.DataFrame:
    """Every image's official split and, for K-fold, the fold it validates in.

    Args:
        manifest: Rows with ``id`` and ``split`` (train / val / test), optionally ``group``.
        n_folds: Number of folds K (ignored with an official validation split).
        split_seed: ``random_state`` of the shuffled K-fold.

    Returns:
        A frame with columns ``id``, ``split`` and ``fold`` (``-1`` for val and test rows,
        and for every row with an official validation split), sorted by split then id.

    Raises:
        ValueError: On an unknown split value, or fewer train images (groups) than folds.
    """
    unknown = sorted(set(manifest["split"]) - set(SPLITS))
    if unknown:
        raise ValueError(f"manifest has unknown split values {unknown}; allowed: train, val, test")
    frame = manifest[["id", "split"]].copy()
    frame["fold"] = -1
    train = frame["split"] == "train"
    if not (frame["split"] == "val").any():
        has_groups = "group" in manifest and manifest.loc[train, "group"].fillna("").ne("").any()
        keys = manifest.loc[train, "group"] if has_groups else manifest.loc[train, "id"]
        fold_of = _kfold_units(sorted(set(keys)), n_folds, split_seed,
                               "groups" if has_groups else "images")
        frame.loc[train, "fold"] = [fold_of[key] for key in keys]
    return frame.sort_values(["split", "id"], kind="stable").reset_index(drop=True)


def _kfold_units(units: list[str], n_folds: int, seed: int, what: str) -> dict[str, int]:
    from sklearn.model_selection import KFold

    if len(units) < n_folds:
        raise ValueError(
            f"data_processing.n_folds = {n_folds} but only {len(units)} non-test "
            f"{what} are in the manifest; lower n_folds or add images"
        )
    fold_of = {}
    kfold = KFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (_, val_idx) in enumerate(kfold.split(units)):
        fold_of.update({units[i]: k for i in val_idx})
    return fold_of


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
