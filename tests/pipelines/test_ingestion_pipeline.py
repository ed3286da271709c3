"""data_ingestion on the synthetic raw data, and what bad input leaves behind (nothing)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kedro.io import DataCatalog
from kedro.runner import SequentialRunner
from kedro_datasets.pandas import CSVDataset

from sa2_pipeline.datasets.schema import DatasetValidationError
from sa2_pipeline.kedro_io import ImageFolderDataset
from sa2_pipeline.pipelines.data_ingestion import create_pipeline


def _catalog(raw: Path, out: Path, generate: bool) -> DataCatalog:
    catalog = DataCatalog({
        "manifest": CSVDataset(filepath=str(out / "manifest.csv")),
        "ingested_images": ImageFolderDataset(str(out / "images")),
        "ingested_masks": ImageFolderDataset(str(out / "masks")),
        "ingested_instances": ImageFolderDataset(str(out / "instances")),
    })
    catalog["params:data_ingestion"] = {
        "dataset": "synthetic", "format": "monuseg", "raw_dir": str(raw),
        "synthetic": {"generate_if_missing": generate, "n_train": 3, "n_test": 2,
                      "image_size": 64, "seed": 1},
    }
    catalog["params:model"] = {"name": "sa2net", "num_classes": 1}
    return catalog


def test_ingestion_generates_missing_default_data_and_writes_outputs(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    SequentialRunner().run(create_pipeline(), _catalog(raw, out, generate=True))
    assert len(list((raw / "MoNuSeg 2018 Training Data" / "Tissue Images").glob("*.tif"))) == 3
    manifest = pd.read_csv(out / "manifest.csv")
    assert len(manifest) == 5
    assert manifest["split"].value_counts().to_dict() == {"train": 3, "test": 2}
    masks = ImageFolderDataset(str(out / "masks")).load()
    assert sorted(masks) == sorted(manifest["id"])
    assert all(set(np.unique(m)) <= {0, 1} for m in masks.values())
    # One id per polygon, stored as 16-bit PNGs; the objects cover exactly the mask.
    instances = ImageFolderDataset(str(out / "instances")).load()
    assert sorted(instances) == sorted(manifest["id"])
    for row in manifest.itertuples():
        labels = instances[row.id]
        assert labels.dtype == np.uint16
        assert np.array_equal(labels > 0, masks[row.id] > 0)
        assert row.n_instances == labels.max() == len(np.unique(labels)) - 1 > 1


def test_ingestion_never_overwrites_existing_raw_data(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    (raw / "notes.txt").write_text("my data")
    with pytest.raises(DatasetValidationError, match="no MoNuSeg folders found"):
        SequentialRunner().run(create_pipeline(), _catalog(raw, out, generate=True))
    assert [p.name for p in raw.iterdir()] == ["notes.txt"]
    assert not out.exists()


@pytest.mark.parametrize("damage", ["corrupt_tiff", "polygon_outside", "missing_xml", "empty"])
def test_bad_input_names_the_file_and_writes_nothing(tmp_path, damage):
    from sa2_pipeline.datasets.synthetic import generate_synthetic_monuseg

    raw, out = tmp_path / "raw", tmp_path / "out"
    generate_synthetic_monuseg(raw, n_train=3, n_test=2, image_size=64, seed=1)
    train = raw / "MoNuSeg 2018 Training Data"
    tif = sorted((train / "Tissue Images").glob("*.tif"))[0]
    xml = train / "Annotations" / f"{tif.stem}.xml"
    if damage == "corrupt_tiff":
        tif.write_bytes(b"II*\x00garbage")
        expected = [tif.name, "unreadable TIFF"]
    elif damage == "polygon_outside":
        text = xml.read_text()
        start = text.index('X="') + 3
        xml.write_text(text[:start] + "5000" + text[text.index('"', start):])
        expected = [xml.name, "outside"]
    elif damage == "missing_xml":
        xml.unlink()
        expected = [tif.name, "missing annotation"]
    else:
        import shutil

        shutil.rmtree(raw)
        raw.mkdir()
        expected = [str(raw), "looked for"]
    with pytest.raises(DatasetValidationError) as err:
        SequentialRunner().run(create_pipeline(), _catalog(raw, out, generate=False))
    for fragment in expected:
        assert fragment in str(err.value)
    assert not out.exists(), "no partial output may be left behind"
