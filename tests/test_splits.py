"""The pure fold assignment, called without Kedro or the config schemas."""

import pandas as pd
import pytest

from sa2_pipeline.splits import assign_folds, fold_ids


def _manifest(n_train: int, n_test: int = 2) -> pd.DataFrame:
    return pd.DataFrame([{"id": f"tr{i:02d}", "split": "train"} for i in range(n_train)]
                        + [{"id": f"te{i}", "split": "test"} for i in range(n_test)])


def test_seed_and_fold_count_change_the_assignment():
    manifest = _manifest(12)
    folds = assign_folds(manifest, 3, 0)
    assert sorted(folds["fold"].unique()) == [-1, 0, 1, 2]
    assert not folds.set_index("id")["fold"].equals(assign_folds(manifest, 3, 1)
                                                    .set_index("id")["fold"])
    assert assign_folds(manifest, 4, 0)["fold"].max() == 3
    assert list(folds["id"]) == sorted(folds["id"], key=lambda i: (i.startswith("tr"), i))


def test_unknown_split_and_too_few_groups_are_explained():
    bad = _manifest(4)
    bad.loc[0, "split"] = "holdout"
    with pytest.raises(ValueError, match=r"unknown split values \['holdout'\]"):
        assign_folds(bad, 2, 0)
    grouped = _manifest(6)
    grouped["group"] = ["p0"] * 3 + ["p1"] * 3 + ["", ""]
    with pytest.raises(ValueError, match="n_folds = 3 but only 2 non-test groups"):
        assign_folds(grouped, 3, 0)


def test_missing_fold_is_an_error():
    with pytest.raises(ValueError, match=r"fold 3 does not exist; the splits have folds 0..2"):
        fold_ids(assign_folds(_manifest(6), 3, 0), 3)
