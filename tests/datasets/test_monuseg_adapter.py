"""MoNuSeg adapter: canonical output on good data, every problem reported on bad data."""

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from sa2_pipeline.datasets.monuseg import (
    format_aperio_xml,
    load_monuseg,
    polygons_to_instances,
    polygons_to_mask,
    read_aperio_polygons,
    scan_monuseg,
)
from sa2_pipeline.datasets.schema import (
    MANIFEST_COLUMNS,
    DatasetValidationError,
    sha256_array,
    sha256_file,
)

TRAIN_IMAGES = Path("MoNuSeg 2018 Training Data/Tissue Images")
TRAIN_XML = Path("MoNuSeg 2018 Training Data/Annotations")
TEST_DIR = Path("MoNuSegTestData")
N_TRAIN, N_TEST, TILE = 3, 2, 64  # the synthetic_root fixture (conftest.py)
SQUARE = np.array([[10.0, 10.0], [30.0, 10.0], [30.0, 30.0], [10.0, 30.0]])


def _first_train(root: Path) -> tuple[Path, Path]:
    tif = sorted((root / TRAIN_IMAGES).glob("*.tif"))[0]
    return tif, root / TRAIN_XML / f"{tif.stem}.xml"


def _first_test(root: Path) -> tuple[Path, Path]:
    tif = sorted((root / TEST_DIR).glob("*.tif"))[0]
    return tif, tif.with_suffix(".xml")


def _load_problems(root: Path) -> list[tuple[str, str]]:
    with pytest.raises(DatasetValidationError) as info:
        load_monuseg(root)
    return info.value.problems


# --------------------------------------------------------------------------- good data


def test_loads_generated_data_into_the_canonical_schema(synthetic_root: Path) -> None:
    dataset = load_monuseg(synthetic_root, dataset_name="synthetic")
    manifest = dataset.manifest

    assert list(manifest.columns) == MANIFEST_COLUMNS
    assert len(manifest) == N_TRAIN + N_TEST
    assert manifest["id"].is_unique
    assert manifest["split"].tolist() == ["train"] * N_TRAIN + ["test"] * N_TEST
    assert set(manifest["dataset"]) == {"synthetic"}
    assert set(dataset.images) == set(dataset.masks) == set(manifest["id"])
    for row in manifest.itertuples():
        image, mask = dataset.images[row.id], dataset.masks[row.id]
        assert image.dtype == np.uint8
        assert image.shape == (row.height, row.width, row.channels) == (TILE, TILE, 3)
        assert mask.dtype == np.uint8
        assert mask.shape == (TILE, TILE)
        assert set(np.unique(mask)) <= {0, 1}
        assert not Path(row.image_path).is_absolute()
        assert Path(row.image_path).stem == Path(row.annotation_path).stem == row.id
        assert row.image_sha256 == sha256_file(synthetic_root / row.image_path)
        assert row.mask_sha256 == sha256_array(mask)
        assert row.foreground_fraction == pytest.approx(mask.mean())
        np.testing.assert_array_equal(image, tifffile.imread(synthetic_root / row.image_path))
        polygons = read_aperio_polygons(synthetic_root / row.annotation_path)
        np.testing.assert_array_equal(mask, polygons_to_mask(polygons, TILE, TILE))


def test_scan_pairs_images_with_annotations(synthetic_root: Path) -> None:
    samples = scan_monuseg(synthetic_root)
    assert [s.split for s in samples] == ["train"] * N_TRAIN + ["test"] * N_TEST
    for sample in samples:
        assert sample.image_path.name == f"{sample.id}.tif"
        if sample.split == "train":
            assert sample.image_path.parent == synthetic_root / TRAIN_IMAGES
            assert sample.annotation_path == synthetic_root / TRAIN_XML / f"{sample.id}.xml"
        else:
            assert sample.annotation_path == synthetic_root / TEST_DIR / f"{sample.id}.xml"


def test_rgba_tiles_drop_alpha(synthetic_root: Path) -> None:
    tif, _ = _first_train(synthetic_root)
    rgb = tifffile.imread(tif)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    tifffile.imwrite(tif, rgba, photometric="rgb", extrasamples=["unassalpha"])
    dataset = load_monuseg(synthetic_root)
    np.testing.assert_array_equal(dataset.images[tif.stem], rgb)


def test_vertices_just_past_the_edge_are_clipped(tmp_path: Path, synthetic_root: Path) -> None:
    tif, xml = _first_train(synthetic_root)
    edge = np.array([[50.0, 10.0], [TILE + 0.5, 10.0], [TILE + 0.9, 20.0], [50.0, 20.0]])
    xml.write_text(format_aperio_xml([SQUARE, edge]))
    mask = load_monuseg(synthetic_root).masks[tif.stem]
    assert mask[15, TILE - 1] == 1  # the clipped nucleus reaches the last column
    assert mask[15, 49] == 0


def test_rasterising_uses_pixel_centres() -> None:
    mask = polygons_to_mask([np.array([[0.6, 0.6], [3.4, 0.6], [3.4, 2.4], [0.6, 2.4]])], 4, 5)
    expected = np.zeros((4, 5), np.uint8)
    expected[1:3, 1:4] = 1  # centres (1..3, 1..2) lie inside; the fractional edges do not
    np.testing.assert_array_equal(mask, expected)
    overlap = [SQUARE, SQUARE + 5]
    labels = polygons_to_instances(overlap, 40, 40)
    assert labels.dtype == np.int32
    assert labels[20, 20] == 2  # later polygon wins
    assert labels[11, 11] == 1
    assert set(np.unique(labels)) == {0, 1, 2}


# --------------------------------------------------------------------------- bad data


def test_corrupt_tiff_is_named(synthetic_root: Path) -> None:
    tif, _ = _first_train(synthetic_root)
    tif.write_bytes(b"this is not a tiff at all" * 10)
    problems = _load_problems(synthetic_root)
    assert [p for p, _ in problems] == [str(tif)]
    assert problems[0][1].startswith("unreadable TIFF: ")


def test_truncated_tiff_is_named(synthetic_root: Path) -> None:
    tif, _ = _first_test(synthetic_root)
    data = tif.read_bytes()
    tif.write_bytes(data[: len(data) // 2])
    problems = _load_problems(synthetic_root)
    assert problems == [(str(tif), problems[0][1])]
    assert problems[0][1].startswith("unreadable TIFF: ")


def test_grayscale_tiff_is_rejected(synthetic_root: Path) -> None:
    tif, _ = _first_train(synthetic_root)
    tifffile.imwrite(tif, np.zeros((TILE, TILE), np.uint8))
    problems = _load_problems(synthetic_root)
    assert problems[0][0] == str(tif)
    assert "expected an RGB or RGBA image" in problems[0][1]


def test_polygon_outside_the_image_names_region_and_vertex(synthetic_root: Path) -> None:
    _, xml = _first_train(synthetic_root)
    outside = np.array([[10.0, 10.0], [TILE + 7.25, 12.0], [20.0, 30.0]])
    xml.write_text(format_aperio_xml([SQUARE, outside, SQUARE + 1]))
    problems = _load_problems(synthetic_root)
    assert len(problems) == 1
    path, reason = problems[0]
    assert path == str(xml)
    assert "region #1 (Id=2)" in reason
    assert f"x={TILE + 7.25:.2f}" in reason
    assert f"{TILE}x{TILE} image" in reason


def test_image_without_annotation(synthetic_root: Path) -> None:
    tif, xml = _first_train(synthetic_root)
    xml.unlink()
    problems = _load_problems(synthetic_root)
    assert problems == [(str(tif), f"missing annotation {xml}")]


def test_annotation_without_image(synthetic_root: Path) -> None:
    tif, xml = _first_test(synthetic_root)
    tif.unlink()
    problems = _load_problems(synthetic_root)
    assert len(problems) == 1
    assert problems[0][0] == str(xml)
    assert problems[0][1].startswith("annotation without image")


def test_annotation_without_regions(synthetic_root: Path) -> None:
    _, xml = _first_train(synthetic_root)
    xml.write_text(format_aperio_xml([]))
    problems = _load_problems(synthetic_root)
    assert len(problems) == 1
    assert problems[0][0] == str(xml)
    assert problems[0][1].startswith("no nucleus polygons")


def test_polygon_with_too_few_vertices(synthetic_root: Path) -> None:
    _, xml = _first_train(synthetic_root)
    xml.write_text(format_aperio_xml([SQUARE, SQUARE[:2]]))
    problems = _load_problems(synthetic_root)
    assert problems == [(str(xml), "region #1 (Id=2): polygon has 2 vertices, needs at least 3")]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("<Annotations><Annotation><Regions><Region>", "malformed XML: "),
        (
            '<Annotations><Annotation><Regions><Region Id="1"><Vertices>'
            '<Vertex X="1" Y="oops"/></Vertices></Region></Regions></Annotation></Annotations>',
            "region #0 (Id=1): vertex 0 has no numeric X/Y",
        ),
        ("<svg></svg>", "not an Aperio ImageScope annotation: root element <svg>"),
    ],
)
def test_unparseable_annotation(synthetic_root: Path, content: str, reason: str) -> None:
    _, xml = _first_test(synthetic_root)
    xml.write_text(content)
    problems = _load_problems(synthetic_root)
    assert len(problems) == 1
    assert problems[0][0] == str(xml)
    assert problems[0][1].startswith(reason)


def test_duplicate_image(synthetic_root: Path) -> None:
    tif, xml = _first_train(synthetic_root)
    copy = synthetic_root / TEST_DIR / "COPY-OF-FIRST.tif"
    shutil.copy(tif, copy)
    shutil.copy(xml, copy.with_suffix(".xml"))
    problems = _load_problems(synthetic_root)
    assert problems == [(str(copy), f"duplicate image: identical pixels to {tif}")]


def test_two_files_with_one_stem_are_reported(synthetic_root: Path) -> None:
    tif, _ = _first_test(synthetic_root)
    other = tif.with_suffix(".tiff")
    shutil.copy(tif, other)
    problems = _load_problems(synthetic_root)
    assert problems == [(str(other), f"same stem as {tif}; ids must be unique")]


def test_empty_root_names_the_folders_looked_in(tmp_path: Path) -> None:
    root = tmp_path / "raw"
    root.mkdir()
    with pytest.raises(DatasetValidationError) as info:
        load_monuseg(root)
    message = str(info.value)
    assert message.startswith(f"1 problem in raw dataset at {root}:")
    for folder in (TRAIN_IMAGES, TRAIN_XML, TEST_DIR):
        assert str(root / folder) in message
    with pytest.raises(DatasetValidationError, match="no MoNuSeg folders found"):
        scan_monuseg(root)


def test_missing_root_is_reported(tmp_path: Path) -> None:
    with pytest.raises(DatasetValidationError, match="does not exist") as info:
        load_monuseg(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere" / TEST_DIR) in str(info.value)


def test_folders_without_tiffs_are_reported(tmp_path: Path) -> None:
    root = tmp_path / "raw"
    (root / TRAIN_IMAGES).mkdir(parents=True)
    (root / TEST_DIR).mkdir(parents=True)
    problems = _load_problems(root)
    assert problems == [
        (str(root / TRAIN_IMAGES), "no '*.tif' images found (train split)"),
        (str(root / TEST_DIR), "no '*.tif' images found (test split)"),
    ]


def test_all_problems_are_reported_at_once(synthetic_root: Path) -> None:
    train = sorted((synthetic_root / TRAIN_IMAGES).glob("*.tif"))
    test = sorted((synthetic_root / TEST_DIR).glob("*.tif"))
    train[0].write_bytes(b"garbage")  # corrupt TIFF
    (synthetic_root / TRAIN_XML / f"{train[1].stem}.xml").unlink()  # image without XML
    (synthetic_root / TRAIN_XML / f"{train[2].stem}.xml").write_text("<Annotations")  # malformed
    test[0].unlink()  # XML without image
    test[1].with_suffix(".xml").write_text(format_aperio_xml([SQUARE * 10]))  # outside

    with pytest.raises(DatasetValidationError) as info:
        load_monuseg(synthetic_root)
    error = info.value
    assert len(error.problems) == 5
    named = {path for path, _ in error.problems}
    assert named == {
        str(train[0]),
        str(train[1]),
        str(synthetic_root / TRAIN_XML / f"{train[2].stem}.xml"),
        str(test[0].with_suffix(".xml")),
        str(test[1].with_suffix(".xml")),
    }
    lines = str(error).splitlines()
    assert lines[0] == f"5 problems in raw dataset at {synthetic_root}:"
    assert len(lines) == 6
    assert all(f"  {path}: {reason}" in lines for path, reason in error.problems)


def test_validation_error_survives_pickling() -> None:
    error = DatasetValidationError([("a.tif", "unreadable TIFF: x")], root="/data/raw")
    clone = pickle.loads(pickle.dumps(error))
    assert clone.problems == error.problems
    assert (
        str(clone)
        == str(error)
        == "1 problem in raw dataset at /data/raw:\n  a.tif: unreadable TIFF: x"
    )
