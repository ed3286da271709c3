"""Property-based tests of every raw-format adapter (hypothesis; profile in tests/conftest.py).

The property: each raw input either ingests -- one manifest row per image, a mask of the
image's size with the dataset's labels -- or is refused in one DatasetValidationError
that names the file at fault; and a refused run leaves nothing on disk.

Inputs: a valid tiny dataset of each format (the writers of ``raw_dataset_writers``, the
embedded synthetic MoNuSeg) with one random mutation (a file truncated, replaced by
random bytes, by a header claiming 100000 x 100000 pixels, deleted or renamed to a random
name), and folder datasets built from random shapes, dtypes, channels and value ranges.
"""

from __future__ import annotations

import shutil
import tempfile
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from raw_dataset_writers import (
    write_acdc,
    write_glas,
    write_image_folder,
    write_isic2018,
    write_segpc2021,
)
from test_hostile_inputs import huge_bmp, huge_jpeg, huge_png

from sa2_pipeline.datasets.registry import load_raw_dataset
from sa2_pipeline.datasets.schema import DatasetValidationError

_WRITERS = {
    "monuseg": lambda root: __import__(
        "sa2_pipeline.datasets.synthetic", fromlist=["x"]
    ).generate_synthetic_monuseg(root, n_train=2, n_test=1, image_size=64, seed=3),
    "glas": lambda root: write_glas(root, {"train": 2, "testA": 1, "testB": 1}),
    "isic2018": lambda root: write_isic2018(root, n=3),
    "segpc2021": write_segpc2021,
    "acdc": lambda root: write_acdc(root, n_training=3, n_testing=1),
    "folder": write_image_folder,
}
_TEMPLATES = Path(tempfile.mkdtemp(prefix="sa2-adapter-templates-"))
_HUGE = {".png": huge_png, ".bmp": huge_bmp, ".jpg": huge_jpeg, ".jpeg": huge_jpeg}
_NAME = st.text(alphabet="abcXYZ019_-.: ", min_size=1, max_size=12)


@cache
def _template(fmt: str) -> tuple[Path, frozenset[int]]:
    """A valid dataset of ``fmt`` (written once) and the mask labels it ingests to."""
    root = _TEMPLATES / fmt
    _WRITERS[fmt](root)
    dataset = load_raw_dataset(fmt, root, dataset_name=fmt)
    labels = frozenset(int(v) for m in dataset.masks.values() for v in np.unique(m))
    return root, labels


def _key(name: str) -> str:
    """What an error says about a file: its name up to the first dot, without the
    annotation suffixes the adapters pair by (``_anno``, ``_segmentation``, ``_gt``)."""
    stem = name.split(".", maxsplit=1)[0]
    for suffix in ("_anno", "_segmentation", "_gt"):
        stem = stem.removesuffix(suffix)
    return stem


def _mutate(root: Path, data: st.DataObject) -> list[str]:
    """Apply one random mutation; return the keys an error about it could name."""
    files = sorted(p for p in root.rglob("*") if p.is_file())
    target = files[data.draw(st.integers(0, len(files) - 1), label="file")]
    kind = data.draw(st.sampled_from(["truncate", "garbage", "huge", "delete", "rename"]),
                     label="mutation")
    content = target.read_bytes()
    if kind == "truncate":
        target.write_bytes(content[: data.draw(st.integers(0, max(len(content) - 1, 0)))])
    elif kind == "garbage":
        target.write_bytes(data.draw(st.binary(max_size=64), label="bytes"))
    elif kind == "huge":
        make = _HUGE.get(target.suffix.lower())
        target.write_bytes(make() if make else content[: len(content) // 2])
    elif kind == "delete":
        target.unlink()
    else:
        new = target.with_name(data.draw(_NAME, label="name") + "".join(target.suffixes))
        if new.exists():
            return [_key(target.name)]
        target.rename(new)
        return [_key(target.name), _key(new.name)]
    return [_key(target.name), target.parent.name]


def _check_ingested(dataset, labels: frozenset[int]) -> None:
    manifest = dataset.manifest
    assert len(manifest) == len(dataset.images) == len(dataset.masks) > 0
    assert sorted(manifest["id"]) == sorted(dataset.masks)
    for sample_id, mask in dataset.masks.items():
        image = dataset.images[sample_id]
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert mask.dtype == np.uint8 and mask.shape == image.shape[:2]
        assert set(np.unique(mask).tolist()) <= set(labels) | {0, 1}
        assert "::" not in sample_id


@pytest.mark.parametrize("fmt", sorted(_WRITERS))
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_mutated_raw_dataset_ingests_or_is_refused_naming_the_file(fmt, data):
    template, labels = _template(fmt)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / fmt
        shutil.copytree(template, root)
        keys = _mutate(root, data)
        try:
            dataset = load_raw_dataset(fmt, root, dataset_name=fmt)
        except DatasetValidationError as err:
            assert err.problems, "refused without saying why"
            text = str(err)
            assert any(key and key in text for key in keys), (
                f"the error does not name the mutated file ({keys}):\n{text}")
        else:
            _check_ingested(dataset, labels)


# --------------------------------------------------------------------------- folder


@st.composite
def _folder_sample(draw, index: int):
    height, width = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    dtype = draw(st.sampled_from([np.uint8, np.uint16]))
    channels = draw(st.sampled_from([1, 3, 4]))
    suffix = draw(st.sampled_from([".png", ".tif", ".bmp", ".jpg"]))
    if suffix in (".jpg", ".bmp"):
        dtype = np.uint8
    if suffix == ".jpg" and channels == 4:
        channels = 3
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    high = 256 if dtype == np.uint8 else 65536
    image = rng.integers(0, high, (height, width, channels)).astype(dtype)
    mask_h = height + draw(st.sampled_from([0, 0, 0, 1]))
    values = draw(st.sampled_from([(0, 255), (0, 1), (0, 1, 2, 3), (0, 7)]))
    mask = rng.choice(np.array(values, np.uint8), (mask_h, width))
    return f"img{index}", suffix, image, mask


def _write_folder(root: Path, samples) -> None:
    import cv2
    import tifffile

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for stem, suffix, image, mask in samples:
        path = root / "images" / f"{stem}{suffix}"
        if suffix == ".tif":
            tifffile.imwrite(path, image[..., 0] if image.shape[2] == 1 else image)
        else:
            order = cv2.COLOR_RGB2BGR if image.shape[2] == 3 else cv2.COLOR_RGBA2BGRA
            pixels = image[..., 0] if image.shape[2] == 1 else cv2.cvtColor(image, order)
            cv2.imwrite(str(path), pixels)
        cv2.imwrite(str(root / "masks" / f"{stem}.png"), mask)


def _run_ingestion(raw: Path, out: Path) -> None:
    """The data_ingestion pipeline through Kedro with the project's atomic datasets."""
    from kedro.io import DataCatalog
    from kedro.runner import SequentialRunner

    from sa2_pipeline.kedro_io import AtomicCSVDataset, ImageFolderDataset
    from sa2_pipeline.pipelines.data_ingestion import create_pipeline

    catalog = DataCatalog({
        "manifest": AtomicCSVDataset(filepath=str(out / "manifest.csv")),
        "ingested_images": ImageFolderDataset(str(out / "images")),
        "ingested_masks": ImageFolderDataset(str(out / "masks")),
        "ingested_instances": ImageFolderDataset(str(out / "instances")),
    })
    catalog["params:data_ingestion"] = {"dataset": "custom", "format": "folder",
                                        "raw_dir": str(raw), "synthetic": None}
    catalog["params:model"] = {"name": "sa2net", "num_classes": 1}
    SequentialRunner().run(create_pipeline(), catalog)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(samples=st.integers(1, 3).flatmap(
    lambda n: st.tuples(*(_folder_sample(i) for i in range(n)))))
def test_random_folder_datasets_ingest_or_are_refused_leaving_nothing(samples):
    with tempfile.TemporaryDirectory() as tmp:
        raw, out = Path(tmp) / "raw", Path(tmp) / "out"
        _write_folder(raw, samples)
        try:
            _run_ingestion(raw, out)
        except Exception as err:  # noqa: BLE001 - Kedro may wrap the node's error
            cause = err
            while cause is not None and not isinstance(cause, DatasetValidationError):
                cause = cause.__cause__ or cause.__context__
            assert isinstance(cause, DatasetValidationError), f"not a clear refusal: {err!r}"
            assert any(stem in str(cause) for stem, *_ in samples), str(cause)
            assert not out.exists() or not any(out.iterdir()), "a refused run wrote outputs"
        else:
            import pandas as pd

            manifest = pd.read_csv(out / "manifest.csv", dtype={"id": str})
            assert sorted(manifest["id"]) == sorted(stem for stem, *_ in samples)
            for stem, _, image, _ in samples:
                import cv2

                mask = cv2.imread(str(out / "masks" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
                assert mask.shape == image.shape[:2] and int(mask.max()) <= 1
