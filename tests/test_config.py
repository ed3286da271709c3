"""Parameter schemas reject typos and wrong types, naming the key."""

import dataclasses
from pathlib import Path

import pytest

from sa2_pipeline.config import (
    DEFAULT_DATASET,
    PARAMETER_GROUPS,
    ConfigError,
    IngestionConfig,
    ModelConfig,
    ProcessingConfig,
    RegistryConfig,
    TrainingConfig,
    parse,
    parse_models,
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


# --------------------------------------------------------------------------------------
# One source of defaults
# --------------------------------------------------------------------------------------
REPO_ROOT = Path(__file__).resolve().parents[1]
ENVIRONMENTS = sorted(p.name for p in (REPO_ROOT / "conf").iterdir()
                      if p.is_dir() and p.name != "base")


def _parameters(env: str) -> dict:
    """``conf/base`` soft-merged with ``conf/<env>``, loaded as ``kedro run --env`` does."""
    from kedro.config import OmegaConfigLoader

    from sa2_pipeline.settings import CONFIG_LOADER_ARGS

    args = {**CONFIG_LOADER_ARGS, "default_run_env": env}
    return OmegaConfigLoader(conf_source=str(REPO_ROOT / "conf"), **args)["parameters"]


def _differences(schema: type, values: dict, where: str) -> list[str]:
    """``where.key: conf/base <value> != schema default <default>`` for each differing key."""
    default = schema()
    parsed = parse(schema, values, where)
    found = []
    for key, value in values.items():
        expected = getattr(default, key)
        if isinstance(value, dict) and dataclasses.is_dataclass(expected):
            found += _differences(type(expected), value, f"{where}.{key}")
        elif getattr(parsed, key) != expected:
            found.append(f"{where}.{key}: conf/base {value!r} != schema default {expected!r}")
    return found


def test_every_conf_base_value_is_its_schema_default():
    """The rule (see config.py's docstring): every value in conf/base/parameters_*.yml
    equals its schema default in sa2_pipeline.config, after resolving conf/base's globals.

    So the defaults are written once, in agreement: a key left out of a YAML file, or a
    schema parsed from ``{}`` outside Kedro, behaves as a plain ``kedro run``. ``baselines``
    is a list of further models (choices, not defaults): its entries must parse.
    """
    import yaml

    params = _parameters("base")
    globals_ = yaml.safe_load((REPO_ROOT / "conf" / "base" / "globals.yml").read_text())
    assert globals_["dataset"] == DEFAULT_DATASET
    unknown = sorted(set(params) - set(PARAMETER_GROUPS))
    assert not unknown, f"conf/base groups without a schema in PARAMETER_GROUPS: {unknown}"
    differences = []
    for group, values in params.items():
        if group == "baselines":
            parse_models(params["model"], values)
            continue
        differences += _differences(PARAMETER_GROUPS[group], values, group)
    assert not differences, "\n".join(differences)


def test_a_changed_default_is_caught():
    differences = _differences(TrainingConfig, {"epochs": 12, "loss": {"dice_weight": 0.7}},
                               "training")
    assert differences == ["training.loss.dice_weight: conf/base 0.7 != schema default 0.5"]


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_every_environment_parses(env):
    params = _parameters(env)
    for group, values in params.items():
        if group == "baselines":
            parse_models(params["model"], values)
        else:
            parse(PARAMETER_GROUPS[group], values, group)
    dataset = params["data_ingestion"]["dataset"]
    assert parse(RegistryConfig, params["registry"], "registry").model_name.endswith(dataset)
