"""Every model file the project reads is loaded weights-only: a planted pickle never runs.

The hostile case: someone who may register a model version (or write the warm-start cache)
replaces its ``model_bundle.pt`` with a crafted pickle. ``retrain --warm-start`` used to
unpickle it with ``weights_only=False`` and run its payload on the retrain host. Each path
that reads a model file is tried with a planted payload: the warm start from the registry
and from its cache folder, ``training.init_from``, slide inference's predictor, the MLflow
pyfunc and the Kedro catalog's bundle dataset.
"""

from __future__ import annotations

import pathlib

import numpy as np
import pandas as pd
import pytest
import torch

from sa2_pipeline.config import ModelConfig
from sa2_pipeline.models import create_model
from sa2_pipeline.models.bundle import BundleLoadError, load_bundle_file, make_bundle

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:mlflow")

NAME = "sa2net-planted"
UNET = ModelConfig(name="unet", base_channels=4, deep_supervision=False)


class _Payload:
    """Unpickling it creates ``marker``: the visible trace of code run by ``torch.load``."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def _plant(path: pathlib.Path, marker: pathlib.Path) -> pathlib.Path:
    """Overwrite ``path`` with a bundle-shaped dict whose weights carry the payload."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": "sa2-pipeline/model-bundle/1", "model_name": "unet",
                "init_kwargs": UNET.kwargs(), "state_dict": _Payload(marker)}, path)
    return path


def _bundle():
    torch.manual_seed(0)
    model = create_model("unet", **UNET.kwargs())
    return make_bundle(model_name="unet", init_kwargs=model.init_kwargs,
                       state_dict=model.state_dict(), patch_size=32)


@pytest.fixture
def registered(tmp_path, monkeypatch):
    """A store under ``tmp_path`` whose champion's ``model_bundle.pt`` is a planted pickle.

    Returns the marker file that exists only if the payload ran.
    """
    import mlflow

    from sa2_pipeline.config import RegistryConfig
    from sa2_pipeline.tracking.registration import ModelToRegister, register_gated

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment("planted", artifact_location=str(tmp_path / "art"))
    scores = pd.DataFrame({"dice": np.linspace(0.6, 0.8, 6)},
                          index=[f"img{i}" for i in range(6)])
    model = ModelToRegister(_bundle(), model_name=NAME, test_scores={"test_dice": 0.7},
                            per_image=scores, test_set_id="T", input_example_size=32)
    with mlflow.start_run(experiment_id=experiment):
        register_gated(model, config=RegistryConfig(gate_resamples=99), score_champion=None)
    files = sorted((tmp_path / "art").rglob("model_bundle.pt"))
    assert files, "the registered version has no model_bundle.pt to plant"
    marker = tmp_path / "payload-ran"
    for file in files:
        _plant(file, marker)
    yield marker
    mlflow.set_tracking_uri(None)


def test_load_bundle_file_refuses_a_planted_pickle_and_the_plant_is_live(tmp_path):
    marker = tmp_path / "payload-ran"
    planted = _plant(tmp_path / "model_bundle.pt", marker)
    with pytest.raises(BundleLoadError) as caught:
        load_bundle_file(planted)
    assert not marker.exists(), "the planted pickle ran"
    assert str(planted) in str(caught.value) and "refused" in str(caught.value)
    torch.load(planted, weights_only=False)  # the control: an unsafe load runs it
    assert marker.exists()


@pytest.mark.parametrize("content", [b"", b"not a model", None])
def test_load_bundle_file_names_a_file_that_is_no_bundle(tmp_path, content):
    path = tmp_path / "model_bundle.pt"
    if content is None:
        torch.save({"weights": torch.ones(2)}, path)  # loads, but is not a bundle
    else:
        path.write_bytes(content)
    with pytest.raises(BundleLoadError, match=str(path)):
        load_bundle_file(path)


def test_retrain_warm_start_from_a_planted_champion_is_refused(registered, tmp_path):
    from sa2_pipeline.engine.builders import warm_start
    from sa2_pipeline.retraining.orchestrate import RetrainRequest, _warm_start_param

    request = RetrainRequest(project_dir=tmp_path, env="base", dataset="synthetic",
                             raw_dir=str(tmp_path / "raw"), build_manifest=lambda: None,
                             model_name=NAME, warm_start=True)
    param = _warm_start_param(request)
    assert param.startswith("training.init_from=")
    path = param.split("=", 1)[1]
    model = create_model("unet", **UNET.kwargs())
    with pytest.raises(BundleLoadError, match="refused"):
        warm_start(model, path, UNET)
    assert not registered.exists(), "the champion's planted bundle ran on the retrain host"


def test_a_planted_warm_start_cache_file_is_refused(tmp_path):
    from sa2_pipeline.engine.builders import warm_start

    marker = tmp_path / "payload-ran"
    cached = _plant(tmp_path / "data" / "06_models" / "synthetic" / "warm_start"
                    / f"{NAME}-v1.pt", marker)
    with pytest.raises(BundleLoadError):
        warm_start(create_model("unet", **UNET.kwargs()), cached, UNET)
    assert not marker.exists()


def test_training_init_from_a_planted_file_is_refused(tmp_path):
    from test_warm_start import _fit

    marker = tmp_path / "payload-ran"
    planted = _plant(tmp_path / "champion.pt", marker)
    with pytest.raises(BundleLoadError):
        _fit(tmp_path, init_from=str(planted))
    assert not marker.exists()


def test_slide_inference_refuses_a_planted_champion(registered):
    from sa2_pipeline.tracking.model_loading import load_predictor, resolve_model

    with pytest.raises(BundleLoadError, match="refused"):
        load_predictor(resolve_model(f"models:/{NAME}@champion"))
    assert not registered.exists()


def test_the_pyfunc_refuses_a_planted_champion(registered):
    import mlflow

    with pytest.raises(Exception) as caught:  # MLflow may wrap the loader's error
        mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    assert "refused" in str(caught.value) or isinstance(caught.value, BundleLoadError)
    assert not registered.exists()


def test_the_kedro_bundle_dataset_refuses_a_planted_file(tmp_path):
    from kedro.io.core import DatasetError

    from sa2_pipeline.kedro_io import ModelBundleDataset

    marker = tmp_path / "payload-ran"
    planted = _plant(tmp_path / "bundle.pt", marker)
    with pytest.raises((BundleLoadError, DatasetError)):
        ModelBundleDataset(str(planted)).load()
    assert not marker.exists()
