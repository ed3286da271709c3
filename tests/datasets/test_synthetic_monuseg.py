"""The embedded default dataset: layout, determinism, ground truth, never overwriting."""

import errno
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


# --------------------------------------------------------------------------- adding tiles


def test_default_names_keep_the_embedded_tiles_and_other_names_draw_from_their_name(
    tmp_path: Path,
) -> None:
    # The embedded set is unchanged by the naming options (its DVC hashes stay valid).
    default = _small(tmp_path / "default")
    named = generate_synthetic_monuseg(tmp_path / "named", n_train=2, n_test=1,
                                       image_size=64, seed=0, prefix="SYN", start=0)
    assert _tree(tmp_path / "default") == _tree(tmp_path / "named")
    # Another name: another tile; the same name: the same tile, whatever else is written.
    other = generate_synthetic_monuseg(tmp_path / "other", n_train=2, n_test=0,
                                       image_size=64, seed=0, prefix="NEW", start=5)
    assert [p.name for p in other] == ["NEW-TRAIN-005.tif", "NEW-TRAIN-005.xml",
                                       "NEW-TRAIN-006.tif", "NEW-TRAIN-006.xml"]
    alone = generate_synthetic_monuseg(tmp_path / "alone", n_train=1, n_test=0,
                                       image_size=64, seed=0, prefix="NEW", start=6)
    assert alone[0].read_bytes() == other[2].read_bytes()
    embedded = {p.read_bytes() for p in default + named}
    assert not embedded & {p.read_bytes() for p in other}


def test_add_writes_only_new_files_and_keeps_the_existing_ones(tmp_path: Path) -> None:
    root = tmp_path / "raw"
    _small(root)
    before = _tree(root)

    written = generate_synthetic_monuseg(root, n_train=1, n_test=1, image_size=64, seed=0,
                                         start=2, add=True)
    assert [p.relative_to(root).as_posix() for p in written] == [
        f"{TRAIN_IMAGES}/SYN-TRAIN-002.tif", f"{TRAIN_XML}/SYN-TRAIN-002.xml",
        f"{TEST_DIR}/SYN-TEST-002.tif", f"{TEST_DIR}/SYN-TEST-002.xml"]
    after = _tree(root)
    assert {k: after[k] for k in before} == before
    assert set(after) - set(before) == {p.relative_to(root).as_posix() for p in written}
    assert not set(before.values()) & {after[p.relative_to(root).as_posix()] for p in written}
    assert sorted(load_monuseg(root).manifest["id"]) == sorted(
        ["SYN-TRAIN-000", "SYN-TRAIN-001", "SYN-TRAIN-002", "SYN-TEST-000", "SYN-TEST-002"])
    assert [p.name for p in tmp_path.iterdir()] == ["raw"]


def test_add_creates_missing_split_folders_and_into_nothing_generates(tmp_path: Path) -> None:
    root = tmp_path / "raw"
    generate_synthetic_monuseg(root, n_train=1, n_test=0, image_size=64, seed=0)
    generate_synthetic_monuseg(root, n_train=0, n_test=1, image_size=64, seed=0,
                               prefix="NEW", add=True)
    assert (root / TEST_DIR / "NEW-TEST-000.tif").is_file()
    fresh = generate_synthetic_monuseg(tmp_path / "fresh", n_train=1, n_test=0,
                                       image_size=64, seed=0, prefix="NEW", add=True)
    assert [p.name for p in fresh] == ["NEW-TRAIN-000.tif", "NEW-TRAIN-000.xml"]


def test_add_refuses_a_taken_name_before_writing_anything(tmp_path: Path) -> None:
    root = tmp_path / "raw"
    _small(root)
    (root / TRAIN_IMAGES / "NEW-TRAIN-001.tiff").write_bytes(b"a user's slide")
    before = _tree(root)

    with pytest.raises(FileExistsError, match="NEW-TRAIN-001.tiff") as caught:
        generate_synthetic_monuseg(root, n_train=3, n_test=0, image_size=64, seed=0,
                                   prefix="NEW", add=True)
    assert "NEW-TRAIN-000" not in str(caught.value)
    with pytest.raises(FileExistsError, match="SYN-TEST-000.tif"):
        generate_synthetic_monuseg(root, n_train=0, n_test=1, image_size=64, seed=0,
                                   add=True)
    assert _tree(root) == before
    assert [p.name for p in tmp_path.iterdir()] == ["raw"]


def test_add_that_fails_midway_removes_what_it_placed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "raw"
    generate_synthetic_monuseg(root, n_train=2, n_test=0, image_size=64, seed=0)
    before = _tree(root)
    real_link = synthetic.os.link
    calls = []

    def link_then_fail(source, target):  # noqa: ANN001, ANN202
        calls.append(target)
        if len(calls) == 5:  # the third tile's image: two tiles and a new folder are in
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_link(source, target)

    monkeypatch.setattr(synthetic.os, "link", link_then_fail)
    with pytest.raises(OSError, match="No space left"):
        generate_synthetic_monuseg(root, n_train=1, n_test=2, image_size=64, seed=0,
                                   prefix="NEW", add=True)
    assert len(calls) == 5
    assert _tree(root) == before
    assert not (root / TEST_DIR).exists()  # the folder it made is gone too
    assert [p.name for p in tmp_path.iterdir()] == ["raw"]


def test_add_without_hard_links_renames_into_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "raw"
    _small(root)

    def no_links(source, target):  # noqa: ANN001, ANN202
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(synthetic.os, "link", no_links)
    written = generate_synthetic_monuseg(root, n_train=1, n_test=0, image_size=64, seed=0,
                                         prefix="NEW", add=True)
    assert all(p.is_file() for p in written)
    assert len(_tree(root)) == 8
    assert [p.name for p in tmp_path.iterdir()] == ["raw"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"prefix": "../x"}, "prefix"), ({"prefix": ""}, "prefix"), ({"start": -1}, "start"),
     ({"n_train": 0, "n_test": 0}, "n_train")],
)
def test_invalid_names_are_rejected(tmp_path: Path, kwargs: dict, message: str) -> None:
    _small(tmp_path / "raw")
    before = _tree(tmp_path / "raw")
    with pytest.raises(ValueError, match=message):
        generate_synthetic_monuseg(tmp_path / "raw", **{"n_train": 1, "n_test": 0,
                                                        "image_size": 64, "seed": 0,
                                                        "add": True, **kwargs})
    assert _tree(tmp_path / "raw") == before
