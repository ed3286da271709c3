"""ISIC 2018 adapter: 0/255 masks to {0, 1}, the official index split, every problem."""

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from raw_dataset_writers import (
    ISIC_IMAGES,
    ISIC_MASKS,
    Expected,
    random_rgb,
    write_grey,
    write_isic2018,
    write_rgb,
)

from sa2_pipeline.datasets.isic2018 import isic_split_counts, load_isic2018
from sa2_pipeline.datasets.schema import MANIFEST_COLUMNS, DatasetValidationError

N = 10


@pytest.fixture
def isic(tmp_path: Path) -> tuple[Path, Expected]:
    root = tmp_path / "isic2018"
    return root, write_isic2018(root, n=N)


def _problems(root: Path) -> list[tuple[str, str]]:
    with pytest.raises(DatasetValidationError) as info:
        load_isic2018(root)
    return info.value.problems


def _ids(root: Path) -> list[str]:
    return sorted(p.stem for p in (root / ISIC_IMAGES).glob("*.jpg"))


def test_official_split_counts() -> None:
    assert isic_split_counts(2594) == (1815, 259, 520)
    assert isic_split_counts(10) == (7, 1, 2)  # same proportions for a subset
    assert isic_split_counts(100) == (70, 10, 20)
    assert isic_split_counts(3) == (1, 1, 1)
    assert isic_split_counts(1) == (1, 0, 0)
    for n in (1, 2, 7, 259, 2593, 2595):
        assert sum(isic_split_counts(n)) == n


def test_loads_with_the_official_split_in_proportion(
    isic: tuple[Path, Expected], caplog: pytest.LogCaptureFixture
) -> None:
    root, expected = isic
    with caplog.at_level(logging.WARNING):
        dataset = load_isic2018(root)
    assert "applied in proportion: 7 train, 1 val, 2 test" in caplog.text
    manifest = dataset.manifest
    assert list(manifest.columns) == MANIFEST_COLUMNS
    ids = _ids(root)
    assert manifest["id"].tolist() == ids  # sorted by id, whatever the file order
    assert manifest["split"].tolist() == ["train"] * 7 + ["val"] + ["test"] * 2
    for row in manifest.itertuples():
        image, mask = dataset.images[row.id], dataset.masks[row.id]
        assert image.dtype == np.uint8 and image.shape == (row.height, row.width, 3)
        assert mask.dtype == np.uint8 and mask.shape == (row.height, row.width)
        np.testing.assert_array_equal(mask, expected.masks[row.id])
        assert set(np.unique(mask)) == {0, 1}
        assert row.image_path == f"{ISIC_IMAGES}/{row.id}.jpg"
        assert row.annotation_path == f"{ISIC_MASKS}/{row.id}_segmentation.png"


# --------------------------------------------------------------------------- bad data


def test_missing_mask(isic: tuple[Path, Expected]) -> None:
    root, _ = isic
    first = _ids(root)[0]
    mask = root / ISIC_MASKS / f"{first}_segmentation.png"
    mask.unlink()
    assert _problems(root) == [(str(root / ISIC_IMAGES / f"{first}.jpg"), f"missing mask {mask}")]


def test_mask_without_image(isic: tuple[Path, Expected]) -> None:
    root, _ = isic
    last = _ids(root)[-1]
    (root / ISIC_IMAGES / f"{last}.jpg").unlink()
    problems = _problems(root)
    assert len(problems) == 1
    assert problems[0][0] == str(root / ISIC_MASKS / f"{last}_segmentation.png")
    assert problems[0][1].startswith("mask without image")


def test_wrong_size(isic: tuple[Path, Expected]) -> None:
    root, _ = isic
    first = _ids(root)[0]
    mask = root / ISIC_MASKS / f"{first}_segmentation.png"
    write_grey(mask, np.zeros((5, 7), np.uint8))
    problems = _problems(root)
    assert len(problems) == 1 and problems[0][0] == str(mask)
    assert problems[0][1].startswith("mask is 7x5 (WxH) but its image")


def test_unexpected_mask_values(isic: tuple[Path, Expected]) -> None:
    root, expected = isic
    first = _ids(root)[1]
    mask = root / ISIC_MASKS / f"{first}_segmentation.png"
    values = expected.masks[first] * 255
    values[0, :3] = [1, 128, 254]  # e.g. an anti-aliased or resized mask
    write_grey(mask, values)
    assert _problems(root) == [
        (
            str(mask),
            "unexpected mask values 1, 128, 254 (uint8); expected 0 (background) and 255 (lesion)",
        )
    ]


def test_unreadable_image(isic: tuple[Path, Expected]) -> None:
    root, _ = isic
    image = root / ISIC_IMAGES / f"{_ids(root)[2]}.jpg"
    image.write_bytes(b"\xff\xd8\xff truncated")
    assert _problems(root) == [(str(image), "unreadable JPG: OpenCV cannot decode the file")]


def test_duplicate_image(isic: tuple[Path, Expected]) -> None:
    root, _ = isic
    ids = _ids(root)
    copy = root / ISIC_IMAGES / "ISIC_9999999.jpg"
    shutil.copy(root / ISIC_IMAGES / f"{ids[0]}.jpg", copy)
    shutil.copy(
        root / ISIC_MASKS / f"{ids[0]}_segmentation.png",
        root / ISIC_MASKS / "ISIC_9999999_segmentation.png",
    )
    assert _problems(root) == [
        (str(copy), f"duplicate image: identical pixels to {root / ISIC_IMAGES / ids[0]}.jpg")
    ]


def test_empty_folders_are_named(tmp_path: Path) -> None:
    root = tmp_path / "isic2018"
    (root / ISIC_IMAGES).mkdir(parents=True)
    (root / ISIC_IMAGES / "LICENSE.txt").write_text("license")
    problems = _problems(root)
    assert len(problems) == 1
    assert problems[0][0] == str(root / ISIC_IMAGES)
    assert "no 'ISIC_<id>.jpg' images found" in problems[0][1]
    assert str(root / ISIC_MASKS) in problems[0][1]
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(DatasetValidationError, match="no ISIC 2018 folders found"):
        load_isic2018(other)


def test_all_problems_at_once(isic: tuple[Path, Expected]) -> None:
    root, _ = isic
    ids = _ids(root)
    (root / ISIC_MASKS / f"{ids[0]}_segmentation.png").unlink()
    (root / ISIC_IMAGES / f"{ids[1]}.jpg").write_bytes(b"nope")
    write_grey(root / ISIC_MASKS / f"{ids[2]}_segmentation.png", np.full((20, 24), 7, np.uint8))
    write_rgb(root / ISIC_MASKS / f"{ids[3]}_segmentation.png", random_rgb(np.random.default_rng()))
    problems = _problems(root)
    assert [Path(path).name for path, _ in problems] == [
        f"{ids[0]}.jpg",
        f"{ids[1]}.jpg",
        f"{ids[2]}_segmentation.png",
        f"{ids[3]}_segmentation.png",
    ]
    assert "colour image" in problems[3][1]


def test_max_side_downscales_as_it_reads_and_keeps_labels(isic: tuple[Path, Expected]) -> None:
    root, expected = isic
    native = load_isic2018(root)
    cap = 20
    capped = load_isic2018(root, max_side=cap)
    assert list(capped.manifest["id"]) == list(native.manifest["id"])
    assert list(capped.manifest["split"]) == list(native.manifest["split"])
    for sample_id, image in native.images.items():
        small, mask = capped.images[sample_id], capped.masks[sample_id]
        height, width = image.shape[:2]
        scale = cap / max(height, width)
        assert small.shape == (round(height * scale), round(width * scale), 3)
        assert mask.shape == small.shape[:2] and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 1}  # nearest label, never blended
        # Area averaging keeps the mean colour; nearest keeps the foreground share.
        assert abs(float(small.mean()) - float(image.mean())) < 3
        assert abs(mask.mean() - expected.masks[sample_id].mean()) < 0.1
    row = capped.manifest.set_index("id").loc[sample_id]
    assert (row["height"], row["width"]) == small.shape[:2]


def test_max_side_still_reports_problems_of_the_original_files(
    isic: tuple[Path, Expected],
) -> None:
    root, _ = isic
    first = _ids(root)[0]
    mask_path = root / ISIC_MASKS / f"{first}_segmentation.png"
    write_grey(mask_path, np.zeros((5, 7), np.uint8))
    with pytest.raises(DatasetValidationError) as info:
        load_isic2018(root, max_side=8)
    assert [p for p, _ in info.value.problems] == [str(mask_path)]
    assert "7x5 (WxH)" in info.value.problems[0][1]
