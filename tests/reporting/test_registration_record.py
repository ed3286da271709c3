"""model_registration.json states the data version the registered model version carries.

The version's ``sa2.data_version`` tag falls back to the DVC hash of the raw data when
``registry.data_version`` is not set; the record (and so the report's provenance) used to
say ``null`` then.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:mlflow")

NAME = "sa2net-tiny"
RAW_HASH = "0123456789abcdef0123456789abcdef.dir"


@pytest.fixture
def store(tmp_path, monkeypatch):
    import mlflow

    # usage_tags reads dvc.lock of the working directory for the version's data version.
    (tmp_path / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  ingest:\n    outs:\n    - path: data/01_raw/tiny\n"
        f"      md5: {RAW_HASH}\n",
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("registration-record-test")
    yield uri
    mlflow.set_tracking_uri(None)


def _register(data_version: str | None) -> dict:
    import mlflow
    import numpy as np
    import pandas as pd
    import torch

    from sa2_pipeline.config import RegistryConfig
    from sa2_pipeline.models import create_model
    from sa2_pipeline.models.bundle import make_bundle
    from sa2_pipeline.tracking.registration import ModelToRegister, register_gated

    torch.manual_seed(0)
    model = create_model("unet", base_channels=4)
    bundle = make_bundle(model_name="unet", init_kwargs=model.init_kwargs,
                         state_dict=model.state_dict(), patch_size=32)
    dice = np.linspace(0.6, 0.8, 6)
    per_image = pd.DataFrame({"dice": dice}, index=[f"img{i}" for i in range(6)])
    to_register = ModelToRegister(bundle, model_name=NAME,
                                  test_scores={"test_dice": float(dice.mean())},
                                  per_image=per_image, test_set_id="T",
                                  data_version=data_version, input_example_size=32)
    with mlflow.start_run():
        return register_gated(to_register, config=RegistryConfig(gate_resamples=99),
                              score_champion=None)


def test_record_has_the_data_version_of_the_version_tag(store):
    from mlflow import MlflowClient

    record = _register(data_version=None)
    tags = MlflowClient().get_model_version(NAME, record["version"]).tags
    assert tags["sa2.data_version"] == RAW_HASH
    assert record["data_version"] == RAW_HASH
    # The identical model again: nothing registered, the record still names the version's
    # data version.
    again = _register(data_version=None)
    assert again["unchanged"] and again["data_version"] == RAW_HASH


def test_an_unchanged_registration_says_which_version_is_champion_once(store):
    """A rebuilt run (`dvc repro` of evaluation) registers nothing new: the report's registry
    text names the champion and does not repeat the reason (issue 24, README 3)."""
    from sa2_pipeline.reporting.report import registry_sentence

    first = _register(data_version=None)  # the first version becomes champion
    again = _register(data_version=None)
    assert again["unchanged"] and again["decision_champion_version"] == first["version"]
    text = registry_sentence(again)
    assert f"Version {first['version']} is the champion." in text, text
    assert text.count("identical") == 1, text
