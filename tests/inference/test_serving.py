"""The registered model's contract: ``mlflow.models.predict`` in a local environment and a
real ``mlflow models serve`` on loopback, with the tiny model of inference_helpers.py."""

from __future__ import annotations

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
import pytest
from inference_helpers import he_image

from sa2_pipeline.inference.encoding import decode_mask

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]


def test_signature_declares_the_params_and_tags_say_how_to_use_it(tiny_model):
    from mlflow import MlflowClient
    from mlflow.models import get_model_info

    info = get_model_info(tiny_model.uri)
    assert {p.name: p.default for p in info.signature.params} == {"threshold": 0.5,
                                                                   "tta": False}
    tags = MlflowClient().get_model_version("sa2net-tiny", "1").tags
    assert tags["sa2.pixel_size_um"] == "0.5"
    assert "channel_order" in tags["sa2.input_convention"]
    assert tags["sa2.git_commit"] and tags["sa2.data_version"]


def test_params_change_the_output_per_call_and_leave_nothing_behind(tiny_model, tmp_path):
    import mlflow

    image = he_image(96, 112, seed=2)
    model = mlflow.pyfunc.load_model(tiny_model.uri)
    base = model.predict(image)
    low = model.predict(image, params={"threshold": 0.2})
    tta = model.predict(image, params={"tta": True})
    assert base.shape == (96, 112) and set(np.unique(base)) <= {0, 1}
    assert low.sum() > base.sum() and (tta != base).any()
    np.testing.assert_array_equal(model.predict(image), base)  # no state left by params

    request, out = tmp_path / "request.json", tmp_path / "predictions.json"
    request.write_text(json.dumps({"inputs": image.tolist(), "params": {"threshold": 0.2}}))
    mlflow.models.predict(tiny_model.uri, input_path=str(request), env_manager="local",
                          output_path=str(out))
    served = np.asarray(json.loads(out.read_text())["predictions"], dtype=np.uint8)
    np.testing.assert_array_equal(served, low)


@pytest.mark.parametrize(("image", "reason"), [
    (np.zeros((5_000, 1, 3), np.uint8), "degenerate"),
    (np.zeros((0, 0, 3), np.uint8), "empty"),
    (np.zeros((8, 8, 3), np.uint8), "at least 32 px"),
    (np.zeros((9000, 9000, 3), np.uint8), "over the limit"),
])
def test_hostile_images_are_refused_up_front(tiny_model, image, reason):
    import mlflow
    from mlflow.exceptions import MlflowException

    model = mlflow.pyfunc.load_model(tiny_model.uri)
    with pytest.raises(MlflowException, match=reason):
        model.predict(image)


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
        deadline = time.monotonic() + 300
        while True:
            with (contextlib.suppress(urllib.error.URLError, ConnectionError, OSError),
                  urllib.request.urlopen(f"{url}/ping", timeout=2) as reply):
                if reply.status == 200:
                    break
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
        with urllib.request.urlopen(request, timeout=300) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def test_served_model_answers_like_in_process_predict(tiny_model):
    import mlflow

    image = he_image(64, 72, seed=4)
    model = mlflow.pyfunc.load_model(tiny_model.uri)
    expected = model.predict(image)
    expected_low = model.predict(image, params={"threshold": 0.2})
    with _server(tiny_model) as url:
        status, answer = _post(url, {"inputs": image.tolist()})
        assert status == 200, answer
        np.testing.assert_array_equal(np.asarray(answer["predictions"]), expected)
        status, answer = _post(url, {"inputs": image.tolist(), "params": {"threshold": 0.2}})
        assert status == 200, answer
        np.testing.assert_array_equal(np.asarray(answer["predictions"]), expected_low)
        # wrong shape (4 channels), wrong type (text), degenerate shape: 4xx with a reason
        rgba = np.zeros((40, 40, 4), np.uint8).tolist()
        status, answer = _post(url, {"inputs": rgba})
        assert 400 <= status < 500 and "shape" in answer.get("message", ""), answer
        status, answer = _post(url, {"inputs": [[["a", "b", "c"]]]})
        assert 400 <= status < 500 and answer.get("message"), answer
        thin = np.zeros((500, 1, 3), np.uint8).tolist()
        status, answer = _post(url, {"inputs": thin})
        assert status == 400 and "degenerate" in answer["message"], answer
        # floats are refused, not cast to uint8 by the server's parser
        status, answer = _post(url, {"inputs": (image / 255.0).tolist()})
        assert status == 400 and "float" in answer["message"], answer
        # the compact form: base64 PNG in a DataFrame column, the same mask, params honoured
        for params, want in (({}, expected), ({"threshold": 0.2}, expected_low)):
            status, answer = _post(url, {"dataframe_split": _compact(image), "params": params})
            assert status == 200, answer
            row = answer["predictions"][0]
            np.testing.assert_array_equal(decode_mask(row["mask"]), want)
            assert (row["height"], row["width"]) == image.shape[:2]
        status, answer = _post(url, {"dataframe_split": {"columns": ["image"],
                                                         "data": [["bm90IGFuIGltYWdl"]]}})
        assert status == 400 and "not a PNG" in answer["message"], answer
        # a bad threshold is a 400 with the reason, never the server's stack trace
        for bad in (None, "high", 1.5, -0.1):
            status, answer = _post(url, {"inputs": image.tolist(),
                                         "params": {"threshold": bad}})
            body = json.dumps(answer)
            assert status == 400 and "threshold" in answer.get("message", ""), (bad, answer)
            assert "Traceback" not in body and "site-packages" not in body, (bad, answer)


def _compact(image: np.ndarray) -> dict:
    """The compact request body of ``image``: its PNG, base64, in the column ``image``."""
    import base64

    from sa2_pipeline.inference.encoding import encode_image

    return {"columns": ["image"],
            "data": [[base64.b64encode(encode_image(image)).decode("ascii")]]}


def test_compact_form_gives_the_array_forms_mask_and_refuses_bad_tables(tiny_model):
    import mlflow
    import pandas as pd
    from mlflow.exceptions import MlflowException

    image = he_image(80, 96, seed=6)
    model = mlflow.pyfunc.load_model(tiny_model.uri)
    for params in (None, {"threshold": 0.2}, {"tta": True}):
        table = pd.DataFrame(_compact(image)["data"], columns=["image"])
        answer = model.predict(table, params=params)
        np.testing.assert_array_equal(decode_mask(answer["mask"].iloc[0]),
                                      model.predict(image, params=params))
    # JSON integers arrive as int64: accepted when 0-255, the same mask as uint8
    np.testing.assert_array_equal(model.predict(image.astype(np.int64)), model.predict(image))
    for bad, reason in [
        (image.astype(np.float32), "float pixel values are refused"),
        (image.astype(np.int64) + 200, "0-255"),
        (pd.DataFrame({"image": ["eA==", "eA=="]}), "one row"),
        (pd.DataFrame({"pixels": ["eA=="]}), "column 'image'"),
        (pd.DataFrame({"image": ["%%%"]}), "bad base64"),
        (pd.DataFrame({"image": [""]}), "bad image"),
    ]:
        with pytest.raises(MlflowException, match=reason):
            model.predict(bad)
