"""The registered model's contract: in-process ``mlflow.models.predict`` and a real
``mlflow models serve`` on loopback, with the tiny model of tests/inference/conftest.py."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from inference_helpers import he_image

from sa2_pipeline.inference.encoding import decode_mask, encode_image

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]


def _frame(*images: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"image": [encode_image(i) for i in images]})


def test_signature_declares_the_input_and_params(tiny_model):
    from mlflow.models import get_model_info

    info = get_model_info(tiny_model.uri)
    inputs = info.signature.inputs.to_dict()
    assert inputs == [{"type": "binary", "name": "image", "required": True}]
    params = {p.name: p.default for p in info.signature.params}
    assert params == {"threshold": 0.5, "tta": False, "precision": "fp32"}


def test_mlflow_predict_honours_params_per_call(tiny_model):
    import mlflow

    image = he_image(96, 112, seed=2)
    frame = _frame(image)
    model = mlflow.pyfunc.load_model(tiny_model.uri)
    base = decode_mask(model.predict(frame)["mask"][0])
    low = decode_mask(model.predict(frame, params={"threshold": 0.2})["mask"][0])
    tta = decode_mask(model.predict(frame, params={"tta": True})["mask"][0])
    again = decode_mask(model.predict(frame)["mask"][0])
    assert base.shape == (96, 112) and set(np.unique(base)) <= {0, 1}
    assert low.sum() > base.sum() and (tta != base).any()
    np.testing.assert_array_equal(again, base)  # the earlier params left nothing behind

    # the same through mlflow.models.predict in a local environment (its own process)
    out = tmp_out = REPO / ".pytest-serving-out.json"
    try:
        mlflow.models.predict(tiny_model.uri, frame, env_manager="local",
                              params={"threshold": 0.2}, output_path=str(tmp_out))
        payload = json.loads(out.read_text())["predictions"]
    finally:
        tmp_out.unlink(missing_ok=True)
    np.testing.assert_array_equal(decode_mask(payload[0]["mask"]), low)


@pytest.mark.parametrize(("image", "reason"), [
    (np.zeros((5_000, 1, 3), np.uint8), "too small or degenerate"),
    (np.zeros((8, 8, 3), np.uint8), "too small"),
    (np.zeros((9000, 9000), np.uint8), "over the limit"),
])
def test_hostile_images_are_refused_before_decoding(tiny_model, image, reason):
    import mlflow
    from mlflow.exceptions import MlflowException

    model = mlflow.pyfunc.load_model(tiny_model.uri)
    with pytest.raises(MlflowException, match=reason):
        model.predict(_frame(image))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def _server(tiny_model):
    port = _free_port()
    env = dict(os.environ, MLFLOW_TRACKING_URI=tiny_model.tracking_uri,
               PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
               PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "models", "serve", "-m", tiny_model.uri, "--env-manager",
         "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 240
        while True:
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"server did not start: {proc.stdout.read()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the server and its workers
        proc.wait(timeout=30)
        proc.stdout.close()


def _post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(f"{url}/invocations", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def test_served_model_answers_like_in_process_predict(tiny_model):
    import mlflow

    image = he_image(80, 90, seed=4)
    png = base64.b64encode(encode_image(image)).decode()
    model = mlflow.pyfunc.load_model(tiny_model.uri)
    expected = decode_mask(model.predict(_frame(image))["mask"][0])
    expected_low = decode_mask(model.predict(_frame(image), params={"threshold": 0.2})
                               ["mask"][0])
    with _server(tiny_model) as url:
        body = {"dataframe_split": {"columns": ["image"], "data": [[png]]}}
        status, answer = _post(url, body)
        assert status == 200, answer
        np.testing.assert_array_equal(decode_mask(answer["predictions"][0]["mask"]), expected)
        status, answer = _post(url, {**body, "params": {"threshold": 0.2}})
        assert status == 200
        np.testing.assert_array_equal(decode_mask(answer["predictions"][0]["mask"]),
                                      expected_low)
        # a nested-list tensor is not the declared input; a float is not an encoded image
        status, answer = _post(url, {"inputs": image.tolist()})
        assert 400 <= status < 500, answer
        status, answer = _post(url, {"dataframe_split": {"columns": ["image"],
                                                         "data": [[0.5]]}})
        assert 400 <= status < 500, answer
        # a degenerate shape is refused up front, with the reason
        thin = base64.b64encode(encode_image(np.zeros((5000, 1, 3), np.uint8))).decode()
        status, answer = _post(url, {"dataframe_split": {"columns": ["image"],
                                                         "data": [[thin]]}})
        assert status == 400 and "degenerate" in answer.get("message", ""), answer
