"""Inference engines: the ONNX export carried by every registered version, and
``engine: auto | torch | onnxruntime | openvino`` through the pyfunc, the CLI and Kedro.

Each test goes through the entry point a user takes and checks what really ran (the
session's type, the calls it took, the manifest's record), and that the masks equal the
eager ones.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from inference_helpers import he_image, kedro_inference, tiny_bundle
from test_inference_run import _cli

ENGINE_SESSIONS = {"onnxruntime": "onnxruntime", "openvino": "openvino"}


def _version_tags(tiny_model) -> dict[str, str]:
    from mlflow import MlflowClient

    return dict(MlflowClient(tiny_model.tracking_uri).get_model_version(
        tiny_model.name, "1").tags)


def test_registered_version_carries_the_checked_export(tiny_model):
    import mlflow
    import onnx

    tags = _version_tags(tiny_model)
    assert tags["sa2.onnx.status"] == "exported"
    assert tags["sa2.onnx.opset"] == "18" and tags["sa2.onnx.tile"] == "64x64"
    assert tags["sa2.onnx.exporter"] == "torchscript"
    assert float(tags["sa2.onnx.max_prob_diff"]) <= 1e-4
    assert float(tags["sa2.onnx.mask_agreement"]) >= 0.9999
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{tiny_model.name}/1"))
    graph = onnx.load(str(local / "artifacts" / "onnx" / "member_0.onnx")).graph
    dims = graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 64, 64]  # batch only
    assert (local / "artifacts" / "model_bundle.pt").is_file()  # beside the weights


def test_pyfunc_runs_each_engine_with_the_eager_mask(tiny_model):
    import mlflow.pyfunc

    image = he_image(150, 130)  # several tiles and a mirrored border
    eager = mlflow.pyfunc.load_model(tiny_model.uri, model_config={"engine": "torch"})
    expected = eager.predict(image)
    assert eager.unwrap_python_model().predictor.engine.engine == "torch"
    for engine in ("onnxruntime", "openvino", "auto"):
        loaded = mlflow.pyfunc.load_model(tiny_model.uri, model_config={"engine": engine})
        np.testing.assert_array_equal(loaded.predict(image), expected, err_msg=engine)
        predictor = loaded.unwrap_python_model().predictor
        choice = predictor.engine
        assert choice.requested == engine
        if engine == "auto":
            measured = choice.measured
            assert measured is not None and "torch:fp32" in measured["agreement"]
            assert measured["agreement"][f"{choice.engine}:{choice.precision}"]["agrees"]
            continue
        assert choice.engine == engine
        network = predictor.models[0]
        assert network.calls["engine"] > 0 and network.calls["eager"] == 0
        assert type(network.session).__module__.endswith("inference.engine_sessions")
        assert network.session.kind.startswith(ENGINE_SESSIONS[engine])


def test_auto_measures_once_and_caches_per_machine(tmp_path, monkeypatch):
    from sa2_pipeline.inference.engines import engine_predictor

    monkeypatch.setenv("SA2_CACHE_DIR", str(tmp_path / "cache"))
    bundle = tiny_bundle()
    first = engine_predictor(bundle, device="cpu", engine="auto", onnx_files="export")
    assert first.engine.reason == "measured on this machine now"
    cached = list((tmp_path / "cache").glob("engine-*.json"))
    assert len(cached) == 1
    record = json.loads(cached[0].read_text())
    assert record["key"]["runtimes"]["onnxruntime"] and record["key"]["cpu"]
    again = engine_predictor(bundle, device="cpu", engine="auto", onnx_files="export")
    assert again.engine.reason.startswith("measured on this machine earlier")
    assert (again.engine.engine, again.engine.batch_size) == (first.engine.engine,
                                                              first.engine.batch_size)


def test_missing_runtime_falls_back_to_torch_with_a_message(monkeypatch, caplog):
    from sa2_pipeline.inference.engines import engine_predictor
    from sa2_pipeline.inference.predict import Predictor

    monkeypatch.setitem(sys.modules, "openvino", None)  # as on a machine without it
    image = he_image(100, 90)
    eager = Predictor(tiny_bundle(), device="cpu").predict_mask(image)
    predictor = engine_predictor(tiny_bundle(), device="cpu", engine="openvino",
                                 onnx_files="export")
    assert predictor.engine.engine == "torch"
    assert "openvino is not installed" in predictor.engine.reason
    assert "running eager torch" in caplog.text
    np.testing.assert_array_equal(predictor.predict_mask(image), eager)


def test_version_without_export_runs_eagerly(tiny_model):
    """A version registered before exports existed (no ``onnx`` artifact) still loads and
    runs, eagerly, with any engine."""
    import mlflow
    import mlflow.pyfunc

    from sa2_pipeline.tracking.mlflow_model import log_model_bundle

    with mlflow.start_run():
        info = log_model_bundle(tiny_bundle())
    version = mlflow.register_model(info.model_uri, "sa2net-old").version
    loaded = mlflow.pyfunc.load_model(f"models:/sa2net-old/{version}",
                                      model_config={"engine": "onnxruntime"})
    predictor = loaded.unwrap_python_model().predictor
    assert predictor.engine.engine == "torch" and "no ONNX export" in predictor.engine.reason
    image = he_image(96, 96)
    eager = mlflow.pyfunc.load_model(tiny_model.uri, model_config={"engine": "torch"})
    np.testing.assert_array_equal(loaded.predict(image), eager.predict(image))


def test_export_that_cannot_be_checked_is_not_registered(tmp_path, monkeypatch):
    """No runtime to check the export with: the version is registered without it, and its
    tag says why (never an unchecked export)."""
    import mlflow
    import pandas as pd
    from mlflow import MlflowClient

    from sa2_pipeline.config import RegistryConfig
    from sa2_pipeline.tracking.registration import ModelToRegister, register_gated

    for name in ("onnxruntime", "openvino"):
        monkeypatch.setitem(sys.modules, name, None)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("no-runtime")
    model = ModelToRegister(tiny_bundle(), model_name="sa2net-plain",
                            test_scores={"test_dice": 0.5},
                            per_image=pd.DataFrame({"dice": [0.5]}, index=["t0"]),
                            test_set_id="t")
    try:
        with mlflow.start_run():
            register_gated(model, config=RegistryConfig(), score_champion=None)
        tags = MlflowClient().get_model_version("sa2net-plain", "1").tags
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri="models:/sa2net-plain/1"))
    finally:
        mlflow.set_tracking_uri(None)
    assert tags["sa2.onnx.status"].startswith("not exported: neither onnxruntime")
    assert not (local / "artifacts" / "onnx").exists()


def _mask(folder: Path, name: str) -> np.ndarray:
    return cv2.imread(str(folder / f"{name}.mask.png"), cv2.IMREAD_UNCHANGED)


def test_cli_engine_changes_what_runs_not_the_mask(tmp_path, tiny_model):
    image = tmp_path / "in" / "a.png"
    image.parent.mkdir()
    cv2.imwrite(str(image), cv2.cvtColor(he_image(150, 170), cv2.COLOR_RGB2BGR))
    masks, manifests = {}, {}
    for engine in ("torch", "onnxruntime"):
        out = tmp_path / engine
        proc = _cli(tiny_model, str(image), "--out", str(out), "--engine", engine,
                    "--no-progress")
        assert proc.returncode == 0, proc.stderr[-3000:]
        masks[engine] = _mask(out, "a.png")
        manifests[engine] = json.loads((out / "manifest.json").read_text())["engine"]
    assert manifests["torch"]["engine"] == "torch"
    assert manifests["onnxruntime"]["engine"] == "onnxruntime"
    assert manifests["onnxruntime"]["versions"]["onnxruntime"]
    np.testing.assert_array_equal(masks["onnxruntime"], masks["torch"])


def test_kedro_inference_engine_param(tmp_path, tiny_model):
    import mlflow.pyfunc

    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    image = he_image(140, 120, seed=3)
    cv2.imwrite(str(inputs / "b.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    params = (f"inference.input_dir={inputs},inference.output_dir={out},"
              f"inference.model_uri={tiny_model.uri},inference.progress=false,"
              "inference.engine=openvino")
    proc = kedro_inference(tiny_model, params, tmp_path / "project")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    run_dir = out / "sa2net-tiny-v1"
    record = json.loads((run_dir / "manifest.json").read_text())["engine"]
    assert record["requested"] == "openvino" and record["engine"] == "openvino"
    eager = mlflow.pyfunc.load_model(tiny_model.uri, model_config={"engine": "torch"})
    np.testing.assert_array_equal(_mask(run_dir, "b.png") > 0, eager.predict(image) > 0)


def test_http_server_runs_the_engine_set_at_load_time(tiny_model, monkeypatch):
    """``mlflow models serve`` with ``MLFLOW_PYFUNC_INFERENCE_CONFIG`` picks the engine;
    the answer is eager's mask."""
    import mlflow.pyfunc
    from test_serving import _post, _server

    image = he_image(100, 110, seed=5)
    expected = mlflow.pyfunc.load_model(tiny_model.uri,
                                        model_config={"engine": "torch"}).predict(image)
    monkeypatch.setenv("MLFLOW_PYFUNC_INFERENCE_CONFIG", json.dumps({"engine": "onnxruntime"}))
    with _server(tiny_model) as url:
        status, answer = _post(url, {"inputs": image.tolist()})
    assert status == 200, answer
    np.testing.assert_array_equal(np.asarray(answer["predictions"]), expected)
    # the setting reaches the served model: a bad engine stops it from loading, named
    monkeypatch.setenv("MLFLOW_PYFUNC_INFERENCE_CONFIG", json.dumps({"engine": "tensorrt"}))
    with pytest.raises(AssertionError, match="engine must be one of"), _server(tiny_model):
        pass


def test_evaluation_engine_is_a_parameter_default_torch(caplog):
    """``evaluation.engine`` runs the test set through an engine (an export made on the
    spot); the default stays eager torch, so the gate scores alike on every machine."""
    import logging

    from sa2_pipeline.config import ConfigError
    from sa2_pipeline.pipelines.evaluation.nodes import evaluate_models

    rng = np.random.default_rng(1)
    test = {"images": {i: he_image(80, 72, seed=s) for s, i in enumerate("ab")},
            "masks": {i: (rng.random((80, 72)) > 0.5).astype(np.uint8) for i in "ab"}}
    models = {"unet-fold0": tiny_bundle()}
    params = {"patch_size": 64, "device": "cpu", "bootstrap_resamples": 99}

    def evaluate(**extra):
        return evaluate_models(models, test, {"name": "unet"}, {**params, **extra})[:2]

    with caplog.at_level(logging.INFO, logger="sa2_pipeline.inference.engines"):
        default, _ = evaluate()
        assert "engine" not in caplog.text  # eager torch: no engine built
        engine, scores = evaluate(engine="onnxruntime")
    assert "engine onnxruntime: onnxruntime fp32" in caplog.text
    for i in "ab":
        np.testing.assert_array_equal(engine[i], default[i])
    assert len(scores) == 2
    with pytest.raises(ConfigError, match="engine"):
        evaluate(engine="tensorrt")
