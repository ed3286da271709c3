"""Generic image-folder adapter: layouts, image and mask conversion rules, every problem."""

from pathlib import Path

import numpy as np
import pytest
import tifffile
from raw_dataset_writers import (
    Expected,
    H,
    W,
    random_rgb,
    write_grey,
    write_image_folder,
    write_rgb,
)

from sa2_pipeline.datasets.folder import canonical_mask, load_image_folder, to_rgb_uint8
from sa2_pipeline.datasets.schema import MANIFEST_COLUMNS, DatasetValidationError


@pytest.fixture
def pooled(tmp_path: Path) -> tuple[Path, Expected]:
    root = tmp_path / "custom"
    return root, write_image_folder(root, layout="pooled")


def _problems(root: Path, **kwargs: str) -> list[tuple[str, str]]:
    with pytest.raises(DatasetValidationError) as info:
        load_image_folder(root, **kwargs)
    return info.value.problems


@pytest.mark.parametrize("layout", ["pooled", "split"])
def test_loads_both_layouts(tmp_path: Path, layout: str) -> None:
    root = tmp_path / "custom"
    expected = write_image_folder(root, layout=layout)
    dataset = load_image_folder(root, dataset_name="my-slides")
    manifest = dataset.manifest
    assert list(manifest.columns) == MANIFEST_COLUMNS
    assert set(manifest["dataset"]) == {"my-slides"}
    assert dict(zip(manifest["id"], manifest["split"], strict=True)) == expected.splits
    for row in manifest.itertuples():
        image, mask = dataset.images[row.id], dataset.masks[row.id]
        assert image.dtype == np.uint8 and image.shape == (H, W, 3)
        assert mask.dtype == np.uint8 and mask.shape == (H, W)
        np.testing.assert_array_equal(mask, expected.masks[row.id])  # 0/255 -> {0, 1}
        if row.id in expected.images:  # lossless formats keep the pixels
            np.testing.assert_array_equal(image, expected.images[row.id])
    if layout == "pooled":
        assert {Path(p).suffix for p in manifest["image_path"]} == {".png", ".tif", ".bmp", ".jpg"}


def test_image_conversions() -> None:
    rgb = random_rgb(np.random.default_rng(0))
    grey = rgb[..., 0]
    np.testing.assert_array_equal(to_rgb_uint8(grey), np.dstack([grey] * 3))
    rgba = np.dstack([rgb, np.full((H, W), 255, np.uint8)])
    np.testing.assert_array_equal(to_rgb_uint8(rgba), rgb)
    full = rgb.astype(np.uint16) * 257  # full-range 16-bit: divided by 257
    np.testing.assert_array_equal(to_rgb_uint8(full), rgb)
    twelve_bit = np.linspace(0, 4095, H * W).reshape(H, W).astype(np.uint16)
    scaled = to_rgb_uint8(twelve_bit)  # not full range: per-image percentile scaling
    assert scaled.shape == (H, W, 3) and scaled.min() == 0 and scaled.max() == 255
    with pytest.raises(ValueError, match="unsupported pixel type float32"):
        to_rgb_uint8(rgb.astype(np.float32))


def test_mask_rules() -> None:
    labels = np.array([[0, 1], [2, 20]], np.uint8)
    assert canonical_mask(labels).kind == "classes"
    np.testing.assert_array_equal(canonical_mask(labels).values, labels)
    np.testing.assert_array_equal(canonical_mask(labels * 0 + 255).values, np.ones((2, 2)))
    np.testing.assert_array_equal(canonical_mask(labels, "binary").values, labels > 0)
    wide = np.array([[0, 300]], np.uint16)
    with pytest.raises(ValueError, match="look like an image, not labels"):
        canonical_mask(wide)
    with pytest.raises(ValueError, match="do not fit in uint8"):
        canonical_mask(wide, "labels")


def test_label_masks_16bit_and_grey_images(pooled: tuple[Path, Expected]) -> None:
    root, _ = pooled
    labels = np.zeros((H, W), np.uint16)
    labels[2:6, 3:9], labels[10:14, 4:8] = 1, 3
    for path in (root / "masks").iterdir():
        path.unlink()
    for path in sorted((root / "images").iterdir()):
        write_grey(root / "masks" / f"{path.stem}.png", labels)  # 16-bit PNG label image
    write_grey(root / "images" / "slide_00.png", np.full((H, W), 77, np.uint8))
    dataset = load_image_folder(root)
    assert all(np.array_equal(m, labels) for m in dataset.masks.values())
    assert next(iter(dataset.masks.values())).dtype == np.uint8
    assert (dataset.images["slide_00"] == 77).all()


# --------------------------------------------------------------------------- bad data


def test_missing_mask_and_mask_without_image(pooled: tuple[Path, Expected]) -> None:
    root, _ = pooled
    (root / "masks" / "slide_00.png").unlink()
    (root / "images" / "slide_01.tif").unlink()
    assert _problems(root) == [
        (
            str(root / "images" / "slide_00.png"),
            f"missing mask: no 'slide_00.<png|tif|tiff|bmp>' in {root / 'masks'}",
        ),
        (
            str(root / "masks" / "slide_01.tif"),
            f"mask without image: no 'slide_01.<ext>' in {root / 'images'}",
        ),
    ]


def test_wrong_size(pooled: tuple[Path, Expected]) -> None:
    root, _ = pooled
    write_grey(root / "masks" / "slide_02.png", np.zeros((H, W + 1), np.uint8))
    assert _problems(root) == [
        (
            str(root / "masks" / "slide_02.png"),
            f"mask is {W + 1}x{H} (WxH) but its image slide_02.bmp is {W}x{H}",
        )
    ]


def test_mask_that_looks_like_an_image(pooled: tuple[Path, Expected]) -> None:
    root, _ = pooled
    write_grey(root / "masks" / "slide_02.png", random_rgb(np.random.default_rng(1))[..., 0])
    problems = _problems(root)
    assert len(problems) == 1 and problems[0][0] == str(root / "masks" / "slide_02.png")
    assert problems[0][1].startswith("mask values look like an image, not labels: ")


def test_mixed_mask_conventions(pooled: tuple[Path, Expected]) -> None:
    root, _ = pooled
    write_grey(root / "masks" / "slide_02.png", np.full((H, W), 2, np.uint8))
    problems = _problems(root)
    assert problems == [(str(root), problems[0][1])]
    assert problems[0][1].startswith("mixed mask conventions: 3 masks are 0/255 binary")


def test_jpeg_mask_and_unreadable_files(pooled: tuple[Path, Expected]) -> None:
    root, _ = pooled
    (root / "masks" / "slide_02.png").unlink()
    write_rgb(root / "masks" / "slide_02.jpg", np.zeros((H, W, 3), np.uint8))
    (root / "images" / "slide_00.png").write_bytes(b"\x89PNG broken")
    (root / "masks" / "slide_01.tif").write_bytes(b"II*\x00 broken")
    problems = _problems(root)
    assert [p for p, _ in problems] == [
        str(root / "images" / "slide_00.png"),
        str(root / "masks" / "slide_01.tif"),
        str(root / "masks" / "slide_02.jpg"),
    ]
    assert problems[0][1] == "unreadable PNG: OpenCV cannot decode the file"
    assert problems[1][1].startswith("unreadable TIFF: ")
    assert problems[2][1].startswith("JPEG mask: lossy compression")


def test_duplicate_image(pooled: tuple[Path, Expected]) -> None:
    root, _ = pooled
    image = tifffile.imread(root / "images" / "slide_01.tif")
    write_rgb(root / "images" / "copy.png", image)
    write_grey(root / "masks" / "copy.png", np.zeros((H, W), np.uint8))
    assert _problems(root) == [
        (
            str(root / "images" / "slide_01.tif"),
            f"duplicate image: identical pixels to {root / 'images' / 'copy.png'}",
        )
    ]


def test_empty_folders_are_named(tmp_path: Path) -> None:
    root = tmp_path / "custom"
    (root / "train" / "images").mkdir(parents=True)
    (root / "test").mkdir()
    problems = _problems(root)
    assert [p for p, _ in problems] == [
        str(root / "train" / "images"),
        str(root / "test" / "images"),
    ]
    assert "no images found in" in problems[0][1] and "(train split)" in problems[0][1]
    assert "(folder missing)" in problems[1][1]
    nothing = tmp_path / "nothing"
    nothing.mkdir()
    assert "no image folders found" in _problems(nothing)[0][1]


def test_both_layouts_at_once_is_an_error(pooled: tuple[Path, Expected]) -> None:
    root, _ = pooled
    (root / "test").mkdir()
    assert _problems(root)[0][1].startswith("both 'images'/'masks' and split folders (test)")


# --------------------------------------------------------------------------- instances


def test_instance_mask_rule() -> None:
    # Sparse 32-bit ids: renumbered 1..n in order, stored as uint16; training gets 0/1.
    labels = np.array([[0, 70000, 70000], [5, 5, 0]], np.uint32)
    result = canonical_mask(labels, "instances")
    np.testing.assert_array_equal(result.values, labels > 0)
    np.testing.assert_array_equal(result.instances, [[0, 2, 2], [1, 1, 0]])
    assert result.instances.dtype == np.uint16
    too_many = np.arange(70000, dtype=np.uint32).reshape(280, 250)
    with pytest.raises(ValueError, match="69999 objects; an instance map holds at most 65535"):
        canonical_mask(too_many, "instances")


def test_folder_with_instance_masks_through_the_ingestion_node(
    pooled: tuple[Path, Expected],
) -> None:
    """``data_ingestion.mask_kind: instances`` as a user sets it: the node's params."""
    from sa2_pipeline.pipelines.data_ingestion.nodes import ingest_raw_dataset

    root, _ = pooled
    labels = np.zeros((H, W), np.uint16)
    labels[2:6, 3:9], labels[2:6, 9:12], labels[10:14, 4:8] = 7, 300, 9  # two touch
    for path in (root / "masks").iterdir():
        path.unlink()
    for path in sorted((root / "images").iterdir()):
        write_grey(root / "masks" / f"{path.stem}.png", labels)
    params = {"dataset": "custom", "format": "folder", "raw_dir": str(root), "synthetic": None}
    manifest, _, masks, instances = ingest_raw_dataset(
        str(root), {**params, "mask_kind": "instances"})
    assert set(manifest["n_instances"]) == {3}
    for image_id, mask in masks.items():
        np.testing.assert_array_equal(mask, labels > 0)  # training keeps the binary mask
        assert sorted(np.unique(instances[image_id])) == [0, 1, 2, 3]
    # The default rule reads the same files as labels: no instance maps, n_instances -1.
    with pytest.raises(DatasetValidationError, match="mask_kind: instances"):
        ingest_raw_dataset(str(root), params)
