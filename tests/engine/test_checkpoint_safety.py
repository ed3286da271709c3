"""Checkpoints load weights-only: a pickle planted in a run folder never runs.

``last.pt`` files sit in a data folder anyone with write access to the project can
reach; a pickle put there used to execute during ``kedro run``.
"""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
import torch

from sa2_pipeline.config import ModelConfig, TrainingConfig, parse
from sa2_pipeline.engine.checkpoint import CheckpointError, load_checkpoint, save_atomic
from sa2_pipeline.engine.fit import fit_segmentation_model


class _Planted:
    """Unpickling it creates ``marker``: the visible trace of code run by torch.load."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def _plant(path: pathlib.Path, marker: pathlib.Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": 1, "model": _Planted(marker)}, path)


def test_a_planted_pickle_is_refused_without_running(tmp_path):
    planted, marker = tmp_path / "last.pt", tmp_path / "code-ran"
    _plant(planted, marker)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(planted)
    assert not marker.exists(), "the planted pickle ran"
    assert str(planted) in str(caught.value) and "delete" in str(caught.value)
    torch.load(planted, weights_only=False)  # the control: the plant is live
    assert marker.exists()


def test_real_checkpoint_content_loads_weights_only(tmp_path):
    import random

    state = {"format": 1, "model": {"w": torch.ones(3)}, "epoch": 4,
             "rng": {"python": random.getstate(), "numpy": np.random.get_state(),
                     "torch": torch.get_rng_state()},
             "history": [{"epoch": 1, "val_dice": np.float64(0.5), "n": np.int64(3)}],
             "meta": {"train_ids": ["a", "b"]}}
    loaded = load_checkpoint(save_atomic(state, tmp_path / "last.pt"))
    assert loaded["epoch"] == 4 and torch.equal(loaded["model"]["w"], torch.ones(3))
    np.testing.assert_array_equal(loaded["rng"]["numpy"][1], np.random.get_state()[1])
    assert loaded["history"][0]["val_dice"] == 0.5


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated zip", b"not a checkpoint"])
def test_a_truncated_checkpoint_names_the_file_and_says_delete_it(tmp_path, content):
    bad = tmp_path / "run" / "last.pt"
    bad.parent.mkdir()
    bad.write_bytes(content)
    with pytest.raises(CheckpointError, match="delete .*last.pt to train this run from scratch"):
        load_checkpoint(bad)


def test_kedro_style_resume_refuses_a_planted_checkpoint(tmp_path):
    """Through the training engine: the resume step meets the planted file and stops."""
    rng = np.random.default_rng(0)
    images = {f"i{k}": rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for k in range(3)}
    masks = {k: (v[..., 0] > 127).astype(np.uint8) for k, v in images.items()}
    cfg = parse(TrainingConfig, {"epochs": 1, "batch_size": 2, "patch_size": 32,
                                 "samples_per_epoch": 2, "num_threads": 1,
                                 "checkpoint_dir": str(tmp_path / "ckpt")}, "training")
    model = ModelConfig(name="unet", base_channels=4, deep_supervision=False)
    fit_segmentation_model(images, masks, images, masks, model, cfg, eval_patch_size=32)
    (checkpoint,) = (tmp_path / "ckpt").rglob("last.pt")
    marker = tmp_path / "code-ran"
    _plant(checkpoint, marker)
    with pytest.raises(CheckpointError, match=str(checkpoint)):
        fit_segmentation_model(images, masks, images, masks, model, cfg, eval_patch_size=32)
    assert not marker.exists()
