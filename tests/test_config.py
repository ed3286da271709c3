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
        (ProcessingConfig, {"n_folds": 3, "fold": 3}, r"fold must be in \[0, 2\]"),
        (ModelConfig, {"base_channels": 1.5}, "model.base_channels must be an integer"),
        (IngestionConfig, {"format": "tiff"}, "data_ingestion.format = 'tiff'"),
    ],
)
def test_wrong_values_are_explained(cls, data, message):
    where = {TrainingConfig: "training", ProcessingConfig: "data_processing",
             ModelConfig: "model", IngestionConfig: "data_ingestion"}[cls]
    with pytest.raises(ConfigError, match=message):
        parse(cls, data, where)


def test_optional_group_accepts_null():
    assert parse(IngestionConfig, {"synthetic": None}, "data_ingestion").synthetic is None


def test_model_kwargs_exclude_the_name():
    assert ModelConfig(base_channels=8).kwargs() == {
        "in_channels": 3, "num_classes": 1, "base_channels": 8, "deep_supervision": True,
    }
