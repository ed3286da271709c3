"""Custom Kedro datasets round-trip their data and write atomically."""

import numpy as np
import pytest
import torch
from kedro.io import DatasetError

from sa2_pipeline.kedro_io import (
    ArrayBundleDataset,
    FigurePngDataset,
    ImageFolderDataset,
    ModelBundleDataset,
)
from sa2_pipeline.models.bundle import make_bundle


def test_array_bundle_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    data = {
        "images": {"a": rng.integers(0, 255, (5, 7, 3), dtype=np.uint8),
                   "b-2": rng.integers(0, 255, (9, 4, 3), dtype=np.uint8)},
        "masks": {"a": np.eye(5, 7, dtype=np.uint8), "b-2": np.zeros((9, 4), np.uint8)},
    }
    ds = ArrayBundleDataset(str(tmp_path / "x" / "train.npz"))
    assert not ds.exists()
    ds.save(data)
    loaded = ds.load()
    assert loaded.keys() == data.keys()
    for group, arrays in data.items():
        for key, arr in arrays.items():
            np.testing.assert_array_equal(loaded[group][key], arr)
    assert [p.name for p in (tmp_path / "x").iterdir()] == ["train.npz"]


def test_image_folder_round_trip_and_replacement(tmp_path):
    ds = ImageFolderDataset(str(tmp_path / "masks"))
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[..., 0] = 200  # red must stay red (OpenCV is BGR internally)
    ds.save({"x": rgb, "m": np.array([[0, 1], [1, 0]], np.uint8)})
    loaded = ds.load()
    np.testing.assert_array_equal(loaded["x"], rgb)
    np.testing.assert_array_equal(loaded["m"], [[0, 1], [1, 0]])
    ds.save({"only": np.ones((2, 2), np.uint8)})  # a new version replaces the old whole
    assert sorted(ds.load()) == ["only"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["masks"]


def test_image_folder_missing_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="folder not found"):
        ImageFolderDataset(str(tmp_path / "nope")).load()


def test_model_bundle_dataset_is_weights_only(tmp_path):
    bundle = make_bundle(model_name="unet", init_kwargs={"base_channels": 4},
                         state_dict={"w": torch.ones(2)}, patch_size=64,
                         metadata={"best_epoch": 3})
    ds = ModelBundleDataset(str(tmp_path / "model.pt"))
    ds.save(bundle)
    loaded = ds.load()
    assert loaded["metadata"]["best_epoch"] == 3
    assert torch.equal(loaded["state_dict"]["w"], torch.ones(2))
    torch.save({"not": "a bundle"}, tmp_path / "other.pt")
    with pytest.raises(DatasetError, match="not a sa2-pipeline model bundle"):
        ModelBundleDataset(str(tmp_path / "other.pt")).load()


def test_figure_dataset_saves_png_and_loads_bytes(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    ds = FigurePngDataset(str(tmp_path / "figures" / "curve.png"))
    ds.save(fig)
    assert ds.load()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.fignum_exists(fig.number)
