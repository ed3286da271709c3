"""training.init_from: the challenger starts from a given bundle's weights."""

from __future__ import annotations

import pytest
import torch
from test_trainer import _toy_data

from sa2_pipeline.config import ModelConfig, TrainingConfig, parse
from sa2_pipeline.engine.fit import fit_segmentation_model
from sa2_pipeline.models import create_model
from sa2_pipeline.models.bundle import make_bundle

UNET = ModelConfig(name="unet", base_channels=4, deep_supervision=False)


def _fit(tmp_path, **overrides):
    cfg = parse(TrainingConfig, {"epochs": 1, "batch_size": 2, "patch_size": 32,
                                 "samples_per_epoch": 2, "num_threads": 1, "device": "cpu",
                                 "checkpoint_dir": str(tmp_path / "ckpt"), "lr": 0.0,
                                 "scheduler": {"name": "constant"}, **overrides}, "training")
    images, masks = _toy_data(2, seed=1)
    return fit_segmentation_model(images, masks, images, masks, UNET, cfg,
                                  eval_patch_size=64)[0]


def _weights(state):
    return {k: v for k, v in state.items() if "running" not in k and "batches" not in k}


def test_init_from_loads_the_bundle_weights(tmp_path):
    torch.manual_seed(123)
    source = create_model("unet", **UNET.kwargs())
    path = tmp_path / "champion.pt"
    torch.save(make_bundle(model_name="unet", init_kwargs=source.init_kwargs,
                           state_dict=source.state_dict(), patch_size=32), path)
    warm = _weights(_fit(tmp_path, init_from=str(path))["state_dict"])
    cold = _weights(_fit(tmp_path)["state_dict"])
    wanted = _weights(source.state_dict())
    # lr = 0: training keeps the initial weights, so they show where it started
    assert all(torch.equal(warm[k], wanted[k]) for k in wanted)
    assert not all(torch.equal(cold[k], wanted[k]) for k in wanted)


def test_init_from_another_architecture_is_refused(tmp_path):
    other = create_model("unet", base_channels=8, deep_supervision=False)
    path = tmp_path / "other.pt"
    torch.save(make_bundle(model_name="unet", init_kwargs=other.init_kwargs,
                           state_dict=other.state_dict(), patch_size=32), path)
    with pytest.raises(ValueError, match="no model unet"):
        _fit(tmp_path, init_from=str(path))
