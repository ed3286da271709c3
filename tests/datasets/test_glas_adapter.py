"""GlaS adapter: canonical binary masks and official split; every problem reported."""

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from raw_dataset_writers import Expected, random_rgb, write_glas, write_grey, write_rgb

from sa2_pipeline.datasets.glas import load_glas, scan_glas
from sa2_pipeline.datasets.schema import (
    MANIFEST_COLUMNS,
    DatasetValidationError,
    sha256_array,
    sha256_file,
)


@pytest.fixture
def glas(tmp_path: Path) -> tuple[Path, Expected]:
    root = tmp_path / "glas"
    return root, write_glas(root)


def _problems(root: Path) -> list[tuple[str, str]]:
    with pytest.raises(DatasetValidationError) as info:
        load_glas(root)
    return info.value.problems


def test_loads_into_the_canonical_schema(glas: tuple[Path, Expected]) -> None:
    root, expected = glas
    dataset = load_glas(root, dataset_name="glas")
    manifest = dataset.manifest
    assert list(manifest.columns) == MANIFEST_COLUMNS
    assert manifest["id"].tolist() == [
        "train_1", "train_2", "train_3", "testA_1", "testA_2", "testB_1",
    ]  # fmt: skip
    assert dict(zip(manifest["id"], manifest["split"], strict=True)) == expected.splits
    assert manifest["split"].value_counts().to_dict() == {"train": 3, "test": 3}
    assert set(manifest["group"]) == {""}
    for row in manifest.itertuples():
        image, mask = dataset.images[row.id], dataset.masks[row.id]
        assert image.dtype == np.uint8 and mask.dtype == np.uint8
        assert image.shape == (row.height, row.width, 3)
        assert mask.shape == (row.height, row.width)
        np.testing.assert_array_equal(image, expected.images[row.id])
        np.testing.assert_array_equal(mask, expected.masks[row.id])  # instances -> {0, 1}
        assert set(np.unique(mask)) == {0, 1}
        assert row.annotation_path == f"{row.id}_anno.bmp"
        assert row.image_sha256 == sha256_file(root / row.image_path)
        assert row.mask_sha256 == sha256_array(mask)
    assert manifest["height"].nunique() > 1  # sizes vary and are kept


def test_archive_top_folder_is_found(tmp_path: Path) -> None:
    root = tmp_path / "glas"
    write_glas(root / "Warwick QU Dataset (Released 2016_07_08)")
    manifest = load_glas(root).manifest
    assert len(manifest) == 6
    assert manifest["image_path"].iloc[0] == "Warwick QU Dataset (Released 2016_07_08)/train_1.bmp"


def test_missing_grade_csv_is_only_a_warning(
    glas: tuple[Path, Expected], caplog: pytest.LogCaptureFixture
) -> None:
    root, _ = glas
    (root / "Grade.csv").unlink()
    with caplog.at_level(logging.WARNING):
        assert len(load_glas(root).manifest) == 6
    assert "no Grade.csv" in caplog.text


def test_colour_palette_annotation_is_read_as_instances(glas: tuple[Path, Expected]) -> None:
    root, expected = glas
    labels = np.zeros((21, 26, 3), np.uint8)
    labels[2:8, 3:9] = (255, 0, 0)
    labels[10:15, 12:20] = (0, 128, 255)
    write_rgb(root / "train_1_anno.bmp", labels)
    dataset = load_glas(root)
    mask = dataset.masks["train_1"]
    np.testing.assert_array_equal(mask, labels.any(axis=-1).astype(np.uint8))
    # One object per colour: black is background, the two glands get ids 1 and 2.
    instances = dataset.instances["train_1"]
    assert instances.dtype == np.uint16 and sorted(np.unique(instances)) == [0, 1, 2]
    assert len(np.unique(instances[2:8, 3:9])) == 1 and instances[2, 3] != instances[10, 12]


def test_gland_ids_become_the_instance_maps(glas: tuple[Path, Expected]) -> None:
    root, expected = glas
    dataset = load_glas(root)
    assert sorted(dataset.instances) == sorted(expected.masks)
    for row in dataset.manifest.itertuples():
        instances = dataset.instances[row.id]
        np.testing.assert_array_equal(instances > 0, expected.masks[row.id] > 0)
        assert row.n_instances == instances.max() == len(np.unique(instances)) - 1


# --------------------------------------------------------------------------- bad data


def test_missing_annotation(glas: tuple[Path, Expected]) -> None:
    root, _ = glas
    (root / "testA_2_anno.bmp").unlink()
    assert _problems(root) == [
        (str(root / "testA_2.bmp"), f"missing annotation {root / 'testA_2_anno.bmp'}")
    ]


def test_annotation_without_image(glas: tuple[Path, Expected]) -> None:
    root, _ = glas
    (root / "train_2.bmp").unlink()
    problems = _problems(root)
    assert len(problems) == 1
    assert problems[0][0] == str(root / "train_2_anno.bmp")
    assert problems[0][1].startswith("annotation without image")


def test_wrong_size(glas: tuple[Path, Expected]) -> None:
    root, _ = glas
    write_grey(root / "train_1_anno.bmp", np.zeros((10, 10), np.uint8))
    assert _problems(root) == [
        (
            str(root / "train_1_anno.bmp"),
            "annotation is 10x10 (WxH) but its image train_1.bmp is 26x21",
        )
    ]


def test_annotation_that_is_a_picture(glas: tuple[Path, Expected]) -> None:
    root, _ = glas
    shutil.copy(root / "testB_1.bmp", root / "testB_1_anno.bmp")
    problems = _problems(root)
    assert len(problems) == 1
    assert problems[0][0] == str(root / "testB_1_anno.bmp")
    assert "looks like a picture, not an instance label map" in problems[0][1]


def test_unreadable_image(glas: tuple[Path, Expected]) -> None:
    root, _ = glas
    (root / "train_3.bmp").write_bytes(b"BM not really a bitmap")
    assert _problems(root) == [
        (str(root / "train_3.bmp"), "unreadable BMP: OpenCV cannot decode the file")
    ]


def test_grey_image_is_rejected(glas: tuple[Path, Expected]) -> None:
    root, _ = glas
    write_grey(root / "train_1.bmp", np.zeros((21, 26), np.uint8))
    problems = _problems(root)
    assert problems[0][0] == str(root / "train_1.bmp")
    assert "expected an RGB or RGBA image" in problems[0][1]


def test_duplicate_image(glas: tuple[Path, Expected]) -> None:
    root, _ = glas
    shutil.copy(root / "train_1.bmp", root / "testB_2.bmp")
    shutil.copy(root / "train_1_anno.bmp", root / "testB_2_anno.bmp")
    assert _problems(root) == [
        (str(root / "testB_2.bmp"), f"duplicate image: identical pixels to {root / 'train_1.bmp'}")
    ]


def test_empty_folder_names_where_it_looked(tmp_path: Path) -> None:
    root = tmp_path / "glas"
    root.mkdir()
    (root / "notes.txt").write_text("nothing here")
    problems = _problems(root)
    assert len(problems) == 1
    assert problems[0][0] == str(root)
    assert "no GlaS images found" in problems[0][1]
    assert "'train_<N>.bmp'" in problems[0][1] and "'*_anno.bmp'" in problems[0][1]
    with pytest.raises(DatasetValidationError, match="does not exist"):
        scan_glas(tmp_path / "nowhere")


def test_all_problems_at_once(glas: tuple[Path, Expected]) -> None:
    root, _ = glas
    rng = np.random.default_rng(5)
    (root / "train_1_anno.bmp").unlink()  # missing annotation
    (root / "train_2.bmp").write_bytes(b"garbage")  # unreadable
    write_grey(root / "testA_1_anno.bmp", np.zeros((3, 3), np.uint8))  # wrong size
    write_rgb(root / "testB_1_anno.bmp", random_rgb(rng, 21, 26))  # a picture
    problems = _problems(root)
    assert {path for path, _ in problems} == {
        str(root / "train_1.bmp"),
        str(root / "train_2.bmp"),
        str(root / "testA_1_anno.bmp"),
        str(root / "testB_1_anno.bmp"),
    }
