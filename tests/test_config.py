"""Parameter schemas reject typos and wrong types, naming the key."""

import pytest

from sa2_pipeline.config import (
    ConfigError,
    IngestionConfig,
    ModelConfig,
    ProcessingConfig,
    TrainingConfig,
    parse,
)


def test_defaults_and_nested_groups_parse():
    cfg = parse(TrainingConfig, {"epochs": 3, "loss": {"dice_weight": 1}}, "training")
    assert cfg.epochs == 3
    assert cfg.loss.dice_weight == 1.0 and isinstance(cfg.loss.dice_weight, float)
    assert cfg.loss.head_weights == (1.0, 1.0, 1.0, 1.0)


def test_unknown_key_is_rejected_with_its_name():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['epoch'\] in training"):
        parse(TrainingConfig, {"epoch": 3}, "training")
    with pytest.raises(ConfigError, match=r"training\.loss"):
        parse(TrainingConfig, {"loss": {"dice": 1}}, "training")


@pytest.mark.parametrize(
    ("cls", "data", "message"),
    [
        (TrainingConfig, {"epochs": "ten"}, "training.epochs must be an integer"),
        (TrainingConfig, {"channels_last": "yes"}, "training.channels_last must be true or false"),
        (TrainingConfig, {"precision": "fp8"}, "training.precision = 'fp8' is not allowed"),
        (TrainingConfig, {"patch_size": 8}, "training.patch_size must be >= 16"),
        (ProcessingConfig, {"n_folds": 1}, r"n_folds must be >= 2"),
        (TrainingConfig, {"folds": [-1]}, r"training.folds must be 'all'"),
        (TrainingConfig, {"folds": "some"}, r"training.folds"),
        (ModelConfig, {"base_channels": 1.5}, "model.base_channels must be an integer"),
        (IngestionConfig, {"format": "tiff"}, "data_ingestion.format = 'tiff'"),
    ],
)
def test_wrong_values_are_explained(cls, data, message):
    where = {TrainingConfig: "training", ProcessingConfig: "data_processing",
             ModelConfig: "model", IngestionConfig: "data_ingestion"}[cls]
    with pytest.raises(ConfigError, match=message):
        parse(cls, data, where)


def test_folds_accept_a_list_or_all():
    assert parse(TrainingConfig, {"folds": [0, 2]}, "training").folds == (0, 2)
    assert parse(TrainingConfig, {"folds": "all"}, "training").folds == "all"


def test_baselines_need_distinct_names():
    from sa2_pipeline.config import parse_models

    models = parse_models({"name": "sa2net"}, [{"name": "unet", "deep_supervision": False}])
    assert [m.name for m in models] == ["sa2net", "unet"]
    with pytest.raises(ConfigError, match="distinct names"):
        parse_models({"name": "unet"}, [{"name": "unet"}])
    with pytest.raises(ConfigError, match=r"baselines\[0\]"):
        parse_models({"name": "sa2net"}, [{"name": "unet", "depth": 3}])


def test_optional_group_accepts_null():
    assert parse(IngestionConfig, {"synthetic": None}, "data_ingestion").synthetic is None


def test_model_kwargs_exclude_the_name():
    assert ModelConfig(base_channels=8).kwargs() == {
        "in_channels": 3, "num_classes": 1, "base_channels": 8, "deep_supervision": True,
    }
