"""SegPC 2021 adapter: grey levels read from the data, cells merged per image, problems."""

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from raw_dataset_writers import Expected, H, W, segpc_cell, write_grey, write_segpc2021

from sa2_pipeline.datasets.schema import MANIFEST_COLUMNS, DatasetValidationError
from sa2_pipeline.datasets.segpc2021 import CYTOPLASM, NUCLEUS, load_segpc2021


@pytest.fixture
def segpc(tmp_path: Path) -> tuple[Path, Expected]:
    root = tmp_path / "segpc2021"
    return root, write_segpc2021(root)


def _problems(root: Path) -> list[tuple[str, str]]:
    with pytest.raises(DatasetValidationError) as info:
        load_segpc2021(root)
    return info.value.problems


def test_loads_one_three_class_mask_per_image(
    segpc: tuple[Path, Expected], caplog: pytest.LogCaptureFixture
) -> None:
    root, expected = segpc
    with caplog.at_level(logging.INFO):
        dataset = load_segpc2021(root)
    assert "nucleus = 40, cytoplasm = 20" in caplog.text
    manifest = dataset.manifest
    assert list(manifest.columns) == MANIFEST_COLUMNS
    assert dict(zip(manifest["id"], manifest["split"], strict=True)) == expected.splits
    assert manifest["split"].tolist() == ["train"] * 3 + ["test"] * 2  # validation -> test
    for row in manifest.itertuples():
        image, mask = dataset.images[row.id], dataset.masks[row.id]
        assert image.dtype == np.uint8 and image.shape == (H, W, 3)
        assert mask.dtype == np.uint8 and mask.shape == (H, W)
        np.testing.assert_array_equal(image, expected.images[row.id])
        np.testing.assert_array_equal(mask, expected.masks[row.id])
        assert set(np.unique(mask)) == {0, CYTOPLASM, NUCLEUS}
        folder = "train" if row.split == "train" else "validation"
        assert row.annotation_path == f"{folder}/y/{row.id}_1.bmp;{folder}/y/{row.id}_2.bmp"


def test_later_cells_overwrite_earlier_ones_in_numeric_order(
    segpc: tuple[Path, Expected],
) -> None:
    root, _ = segpc
    # cell 10 (after 1 and 2 in numeric order, before 2 in text order) puts cytoplasm on
    # cell 1's nucleus (rows 3..6, cols 4..7)
    write_grey(root / "train" / "y" / "101_10.bmp", segpc_cell(H, W, 2, 3))
    dataset = load_segpc2021(root)
    mask = dataset.masks["101"]
    assert mask[3, 4] == CYTOPLASM  # was cell 1's nucleus
    assert mask[5, 8] == NUCLEUS  # cell 10's nucleus
    assert mask[1, 1] == CYTOPLASM  # cell 1 alone
    assert mask[10, 13] == NUCLEUS  # cell 2's nucleus, outside cell 10
    assert dataset.manifest.loc[0, "annotation_path"].endswith("101_2.bmp;train/y/101_10.bmp")


def test_levels_are_derived_not_assumed(tmp_path: Path) -> None:
    root = tmp_path / "segpc2021"
    expected = write_segpc2021(root, nucleus=10, cytoplasm=200)  # reversed brightness
    dataset = load_segpc2021(root)
    for image_id, mask in dataset.masks.items():
        np.testing.assert_array_equal(mask, expected.masks[image_id])


def test_flat_layout_is_all_train(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "segpc2021"
    write_segpc2021(root, layout="flat")
    (root / "notes.txt").write_text("ignored")
    with caplog.at_level(logging.WARNING):
        manifest = load_segpc2021(root).manifest
    assert manifest["split"].tolist() == ["train"] * 3
    assert "no official test split" in caplog.text


# --------------------------------------------------------------------------- bad data


def test_image_without_cell_masks(segpc: tuple[Path, Expected]) -> None:
    root, _ = segpc
    for path in (root / "validation" / "y").glob("104_*.bmp"):
        path.unlink()
    assert _problems(root) == [
        (
            str(root / "validation" / "x" / "104.bmp"),
            f"no cell masks '{root / 'validation' / 'y' / '104'}_<k>.bmp' found",
        )
    ]


def test_mask_without_image_and_bad_name(segpc: tuple[Path, Expected]) -> None:
    root, _ = segpc
    y = root / "train" / "y"
    shutil.copy(y / "101_1.bmp", y / "999_1.bmp")
    shutil.copy(y / "101_1.bmp", y / "101-extra.bmp")
    problems = _problems(root)
    assert problems == [
        (str(y / "101-extra.bmp"), "mask name does not follow '<image>_<k>.bmp' (k = 1, 2, ...)"),
        (str(y / "999_1.bmp"), f"mask without image (expected {root / 'train' / 'x' / '999'}.bmp)"),
    ]


def test_wrong_size(segpc: tuple[Path, Expected]) -> None:
    root, _ = segpc
    path = root / "train" / "y" / "102_2.bmp"
    write_grey(path, segpc_cell(H + 4, W, 2, 2))
    assert _problems(root) == [(str(path), f"mask is {W}x{H + 4} (WxH) but its image is {W}x{H}")]


@pytest.mark.parametrize(
    ("levels", "found"),
    [((40,), "1: [40]"), ((20, 40, 60), "3: [20, 40, 60]")],
)
def test_mask_without_exactly_two_levels(
    segpc: tuple[Path, Expected], levels: tuple[int, ...], found: str
) -> None:
    root, _ = segpc
    path = root / "validation" / "y" / "105_1.bmp"
    mask = np.zeros((H, W), np.uint8)
    for i, level in enumerate(levels):
        mask[i * 3 : i * 3 + 3, 2:8] = level
    write_grey(path, mask)
    assert _problems(root) == [
        (
            str(path),
            f"expected exactly 2 non-zero grey levels (nucleus and cytoplasm), found {found}",
        )
    ]


def test_levels_that_differ_from_the_dataset(segpc: tuple[Path, Expected]) -> None:
    root, _ = segpc
    path = root / "train" / "y" / "103_1.bmp"
    write_grey(path, segpc_cell(H, W, 1, 1, nucleus=41))
    problems = _problems(root)
    assert problems == [
        (
            str(path),
            "grey levels [20, 41] differ from the dataset's [20, 40] (used by 9 of 10 masks)",
        )
    ]


def test_unreadable_image_and_mask(segpc: tuple[Path, Expected]) -> None:
    root, _ = segpc
    (root / "train" / "x" / "101.bmp").write_bytes(b"")
    (root / "train" / "y" / "102_1.bmp").write_bytes(b"BM\x00\x01")
    assert _problems(root) == [
        (str(root / "train" / "x" / "101.bmp"), "unreadable BMP: OpenCV cannot decode the file"),
        (str(root / "train" / "y" / "102_1.bmp"), "unreadable BMP: OpenCV cannot decode the file"),
    ]


def test_duplicate_image(segpc: tuple[Path, Expected]) -> None:
    root, _ = segpc
    train, val = root / "train", root / "validation"
    shutil.copy(train / "x" / "101.bmp", val / "x" / "201.bmp")
    shutil.copy(train / "y" / "101_1.bmp", val / "y" / "201_1.bmp")
    assert _problems(root) == [
        (
            str(val / "x" / "201.bmp"),
            f"duplicate image: identical pixels to {train / 'x' / '101.bmp'}",
        )
    ]


def test_empty_folder_names_where_it_looked(tmp_path: Path) -> None:
    root = tmp_path / "segpc2021"
    (root / "train" / "x").mkdir(parents=True)
    problems = _problems(root)
    assert problems == [(str(root / "train" / "x"), "no '<image>.bmp' images found (train split)")]
    empty = tmp_path / "empty"
    empty.mkdir()
    problems = _problems(empty)
    assert problems[0][1].startswith("no SegPC folders found; looked for '<image>.bmp' in")
    assert str(empty / "validation" / "x") in problems[0][1]
