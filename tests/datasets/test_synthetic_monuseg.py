"""The embedded default dataset: layout, determinism, ground truth, never overwriting."""

from pathlib import Path

import numpy as np
import pytest
import tifffile

from sa2_pipeline.datasets import synthetic
from sa2_pipeline.datasets.monuseg import (
    format_aperio_xml,
    load_monuseg,
    polygons_to_instances,
    polygons_to_mask,
    read_aperio_polygons,
)
from sa2_pipeline.datasets.synthetic import (
    ensure_synthetic_monuseg,
    generate_synthetic_monuseg,
    render_synthetic_tile,
)

TRAIN_IMAGES = "MoNuSeg 2018 Training Data/Tissue Images"
TRAIN_XML = "MoNuSeg 2018 Training Data/Annotations"
TEST_DIR = "MoNuSegTestData"


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _small(root: Path, seed: int = 0) -> list[Path]:
    return generate_synthetic_monuseg(root, n_train=2, n_test=1, image_size=64, seed=seed)


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path: Path) -> None:
    _small(tmp_path / "a", seed=3)
    _small(tmp_path / "b", seed=3)
    _small(tmp_path / "c", seed=4)
    a, b, c = _tree(tmp_path / "a"), _tree(tmp_path / "b"), _tree(tmp_path / "c")
    assert a == b
    assert a.keys() == c.keys()
    assert all(a[name] != c[name] for name in a)


def test_layout_matches_the_published_monuseg_folders(tmp_path: Path) -> None:
    root = tmp_path / "raw"
    written = generate_synthetic_monuseg(root, n_train=3, n_test=2, image_size=64, seed=0)

    on_disk = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert sorted(p.relative_to(root).as_posix() for p in written) == on_disk
    assert sorted({str(Path(name).parent) for name in on_disk}) == [
        TRAIN_XML,
        TRAIN_IMAGES,
        TEST_DIR,
    ]
    train_tifs = sorted((root / TRAIN_IMAGES).glob("*.tif"))
    train_xmls = sorted((root / TRAIN_XML).glob("*.xml"))
    assert [p.stem for p in train_tifs] == [p.stem for p in train_xmls]
    assert len(train_tifs) == 3
    assert len(list((root / TEST_DIR).glob("*.tif"))) == 2
    assert len(list((root / TEST_DIR).glob("*.xml"))) == 2
    image = tifffile.imread(train_tifs[0])
    assert image.dtype == np.uint8
    assert image.shape == (64, 64, 3)


def test_xml_polygons_reproduce_the_rendered_mask_exactly(tmp_path: Path) -> None:
    image, polygons, instances = render_synthetic_tile(np.random.default_rng(11), 96)
    xml_path = tmp_path / "tile.xml"
    xml_path.write_text(format_aperio_xml(polygons))

    read_back = read_aperio_polygons(xml_path)
    assert len(read_back) == len(polygons) > 0
    assert all(np.array_equal(p, q) for p, q in zip(read_back, polygons, strict=True))
    np.testing.assert_array_equal(polygons_to_instances(read_back, 96, 96), instances)
    mask = polygons_to_mask(read_back, 96, 96)
    np.testing.assert_array_equal(mask, (instances > 0).astype(np.uint8))
    assert image.shape == (96, 96, 3)


def test_nuclei_are_rendered_where_the_polygons_are(synthetic_root_readonly: Path) -> None:
    dataset = load_monuseg(synthetic_root_readonly)
    for sample_id, mask in dataset.masks.items():
        image = dataset.images[sample_id].astype(np.float64)
        # Hematoxylin absorbs red: nuclei are darker in R than the eosin background.
        red = image[..., 0]
        inside, outside = red[mask == 1].mean(), red[mask == 0].mean()
        assert inside < outside - 25, sample_id
        # A threshold on red separates most pixels the way the mask does (learnable), but
        # not all of them (blur, pale nuclei, stain noise: not trivial).
        agreement = ((red < (inside + outside) / 2) == (mask == 1)).mean()
        assert 0.8 < agreement < 0.995, (sample_id, agreement)


def test_foreground_fraction_is_like_monuseg(tmp_path: Path) -> None:
    generate_synthetic_monuseg(tmp_path / "raw", n_train=4, n_test=2, image_size=128, seed=1)
    fractions = load_monuseg(tmp_path / "raw").manifest["foreground_fraction"]
    assert fractions.between(0.12, 0.40).all(), fractions.tolist()


def test_generate_refuses_a_root_with_files(tmp_path: Path) -> None:
    root = tmp_path / "raw"
    (root / "MoNuSegTestData").mkdir(parents=True)
    (root / "MoNuSegTestData" / "mine.tif").write_bytes(b"user data")
    with pytest.raises(ValueError, match="already contains files"):
        _small(root)
    assert _tree(root) == {"MoNuSegTestData/mine.tif": b"user data"}


def test_ensure_never_overwrites_or_adds_to_user_data(tmp_path: Path) -> None:
    root = tmp_path / "raw"
    (root / "nested").mkdir(parents=True)
    (root / "nested" / "notes.txt").write_text("my slides are elsewhere")
    before = _tree(root)

    assert ensure_synthetic_monuseg(root, n_train=2, n_test=1, image_size=64, seed=0) is False
    assert _tree(root) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


def test_ensure_generates_once_into_a_missing_or_empty_root(tmp_path: Path) -> None:
    root = tmp_path / "raw"
    (root / "empty" / "subfolder").mkdir(parents=True)  # folders but no files: empty

    assert ensure_synthetic_monuseg(root, n_train=2, n_test=1, image_size=64, seed=0) is True
    first = _tree(root)
    assert len(first) == 6
    assert not (root / "empty").exists()

    assert ensure_synthetic_monuseg(root, n_train=2, n_test=1, image_size=64, seed=9) is False
    assert _tree(root) == first


def test_generation_leaves_no_temporary_folders(tmp_path: Path) -> None:
    _small(tmp_path / "raw")
    assert [p.name for p in tmp_path.iterdir()] == ["raw"]


def test_failed_generation_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def failing_render(rng: np.random.Generator, size: int):  # noqa: ANN202
        calls.append(size)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return render_synthetic_tile(rng, size)

    monkeypatch.setattr(synthetic, "render_synthetic_tile", failing_render)
    with pytest.raises(RuntimeError, match="disk full"):
        _small(tmp_path / "raw")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"n_train": 0}, "n_train"), ({"n_test": -1}, "n_test"), ({"image_size": 8}, "image_size")],
)
def test_invalid_arguments_are_rejected(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate_synthetic_monuseg(tmp_path / "raw", **{"n_train": 2, "n_test": 1,
                                                        "image_size": 64, "seed": 0, **kwargs})
    assert not (tmp_path / "raw").exists()
