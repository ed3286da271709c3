"""Every registered adapter: same manifest schema and mask convention via load_raw_dataset."""

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from raw_dataset_writers import (
    write_acdc,
    write_glas,
    write_image_folder,
    write_isic2018,
    write_segpc2021,
)

from sa2_pipeline.datasets.registry import ADAPTERS, load_raw_dataset
from sa2_pipeline.datasets.schema import MANIFEST_COLUMNS, SPLITS, IngestedDataset
from sa2_pipeline.datasets.synthetic import generate_synthetic_monuseg


def _write_monuseg(root: Path) -> None:
    generate_synthetic_monuseg(root, n_train=2, n_test=1, image_size=32, seed=3)


#: format -> (writer of a tiny raw dataset, mask values allowed)
WRITERS: dict[str, tuple[Callable[[Path], object], set[int]]] = {
    "monuseg": (_write_monuseg, {0, 1}),
    "glas": (write_glas, {0, 1}),
    "isic2018": (write_isic2018, {0, 1}),
    "segpc2021": (write_segpc2021, {0, 1, 2}),
    "acdc": (lambda root: write_acdc(root, n_training=3, n_testing=1), {0, 1, 2, 3}),
    "folder": (write_image_folder, {0, 1}),
}

EXPECTED_DTYPES = {
    **{c: "str" for c in MANIFEST_COLUMNS},
    "height": "int64",
    "width": "int64",
    "channels": "int64",
    "n_instances": "int64",
    "foreground_fraction": "float64",
}


def test_every_registered_adapter_has_a_fixture() -> None:
    assert sorted(WRITERS) == sorted(ADAPTERS)


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> dict[str, IngestedDataset]:
    out = {}
    for fmt, (writer, _) in WRITERS.items():
        root = tmp_path_factory.mktemp(fmt) / "raw"
        writer(root)
        out[fmt] = load_raw_dataset(fmt, root, dataset_name=f"{fmt}-test")
    return out


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_same_schema_and_mask_convention(fmt: str, ingested: dict[str, IngestedDataset]) -> None:
    dataset = ingested[fmt]
    manifest = dataset.manifest
    reference = ingested["monuseg"].manifest
    assert list(manifest.columns) == MANIFEST_COLUMNS == list(reference.columns)
    assert manifest.dtypes.astype(str).to_dict() == EXPECTED_DTYPES
    assert manifest.dtypes.equals(reference.dtypes)
    assert manifest.index.equals(pd.RangeIndex(len(manifest)))
    assert manifest["id"].is_unique
    assert set(manifest["split"]) <= set(SPLITS)
    assert set(manifest["dataset"]) == {f"{fmt}-test"}
    assert set(dataset.images) == set(dataset.masks) == set(manifest["id"])
    assert manifest["group"].notna().all()
    assert (manifest["group"] != "").all() == (fmt == "acdc")
    allowed = WRITERS[fmt][1]
    for row in manifest.itertuples():
        image, mask = dataset.images[row.id], dataset.masks[row.id]
        assert image.dtype == np.uint8 and image.shape == (row.height, row.width, 3)
        assert row.channels == 3
        assert mask.dtype == np.uint8 and mask.shape == (row.height, row.width)
        assert set(np.unique(mask).tolist()) <= allowed
        assert not Path(row.image_path).is_absolute()
        assert 0.0 <= row.foreground_fraction <= 1.0


def test_max_side_for_a_format_without_it_is_a_clear_error(tmp_path) -> None:
    from sa2_pipeline.datasets.registry import load_raw_dataset

    with pytest.raises(ValueError, match="max_side is not supported for format 'monuseg'"):
        load_raw_dataset("monuseg", tmp_path, dataset_name="x", max_side=512)
