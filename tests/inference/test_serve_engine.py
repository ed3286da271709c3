"""``sa2-pipeline serve --engine``: the engine reaches the server process (and only it)
through ``MLFLOW_PYFUNC_INFERENCE_CONFIG``, merged into the user's value, the option
winning; an unknown engine is refused before anything starts.

The served model names its engine nowhere a client sees it (the answer is the mask; the
choice is logged at INFO, which the scoring server does not print), so the end-to-end
test looks at what the server's processes loaded: the runtime's shared library, and
whether ``auto`` measured (its cache file). The default's side is in
``test_serve_command.py::test_serve_answers_and_sigterm_leaves_no_process_and_a_free_port``:
no option, ``auto``, measured.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.request

import numpy as np
import pytest
from inference_helpers import he_image
from test_serve_command import BIN, REPO, _free_port, _group_processes, _read_until, _reap

from sa2_pipeline.tracking import serving
from sa2_pipeline.tracking.serving import INFERENCE_CONFIG_VAR, ModelServer, ServeError

#: The engines' runtimes by a shared library each loads (inference/engine_sessions.py).
RUNTIME_LIBRARIES = {"onnxruntime": "onnxruntime_pybind11_state", "openvino": "libopenvino."}


def _runtimes_loaded(pgid: int) -> set[str]:
    """The engine runtimes some process of the server's group has loaded (its memory
    maps): what runs the served network, seen from outside the server."""
    maps = ""
    for proc in _group_processes(pgid):
        with contextlib.suppress(OSError):
            maps += (proc / "maps").read_text()
    return {name for name, library in RUNTIME_LIBRARIES.items() if library in maps}


def test_serve_engine_runs_that_engine_in_the_server_and_wins_over_the_variable(
        tiny_model, tmp_path):
    """``--engine onnxruntime`` with ``MLFLOW_PYFUNC_INFERENCE_CONFIG={"engine": "torch"}``
    in the user's environment: ONNX Runtime runs (torch would load no runtime), nothing
    is measured (the default, auto, measures: see test_serve_command.py), OpenVINO is
    never loaded, and the answer is eager's mask."""
    import mlflow.pyfunc

    image = he_image(64, 72, seed=4)
    eager = mlflow.pyfunc.load_model(tiny_model.uri,
                                     model_config={"engine": "torch"}).predict(image)
    port, cache = _free_port(), tmp_path / "engine-cache"
    env = dict(os.environ, MLFLOW_TRACKING_URI=tiny_model.tracking_uri,
               PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1", SA2_CACHE_DIR=str(cache),
               **{INFERENCE_CONFIG_VAR: json.dumps({"engine": "torch"})})
    proc = subprocess.Popen(
        [str(BIN / "sa2-pipeline"), "serve", "--model", tiny_model.uri, "--port", str(port),
         "--log", str(tmp_path / "server.log"), "--engine", "onnxruntime"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: list[str] = []
    pgid = None
    try:
        pgid = int(_read_until(proc, r"process group (\d+)", seen, 60)[1])
        _read_until(proc, r"^engine: onnxruntime \(load-time setting, --engine\)$", seen, 30)
        _read_until(proc, r"ready: http://127\.0\.0\.1:\d+/invocations", seen, 240)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps({"inputs": image.tolist()}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as reply:
            assert reply.status == 200
            served = np.asarray(json.loads(reply.read())["predictions"])
        assert _runtimes_loaded(pgid) == {"onnxruntime"}, "".join(seen)
        assert not list(cache.glob("engine-*.json")), "auto measured: --engine was lost"
        np.testing.assert_array_equal(served, eager)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, "".join(seen) + proc.stdout.read()
    finally:
        _reap(proc, pgid)


@pytest.fixture
def echo_server(monkeypatch):
    """``ModelServer.start`` whose command is a Python that writes the value of
    ``MLFLOW_PYFUNC_INFERENCE_CONFIG`` it was given (or ``<unset>``) to the log."""
    script = (f"import os; print(os.environ.get({INFERENCE_CONFIG_VAR!r}, '<unset>'), "
              "end='')")
    monkeypatch.setattr(serving, "_mlflow_command", lambda: [sys.executable, "-c", script])
    monkeypatch.setattr(serving, "_become_subreaper", lambda: None)  # not pytest's own

    def start(tmp_path, **kwargs):
        log = tmp_path / f"echo-{len(list(tmp_path.glob('echo-*')))}.log"
        server = ModelServer.start("models:/m/1", port=_free_port(), log_path=log, **kwargs)
        assert server.process.wait(timeout=30) == 0, server.log_tail()
        server.stop()
        return server, log.read_text()

    return start


def test_the_servers_environment_gets_the_engine_merged_and_ours_is_untouched(
        echo_server, tmp_path, monkeypatch):
    user = {"engine": "torch", "other_setting": 3}
    monkeypatch.setenv(INFERENCE_CONFIG_VAR, json.dumps(user))
    server, child = echo_server(tmp_path, engine="openvino")
    assert json.loads(child) == {"engine": "openvino", "other_setting": 3}  # the option wins
    assert server.engine == "openvino"
    assert json.loads(os.environ[INFERENCE_CONFIG_VAR]) == user  # this process: unchanged

    server, child = echo_server(tmp_path)  # no engine: the user's value, as it is
    assert json.loads(child) == user and server.engine == "torch"

    monkeypatch.delenv(INFERENCE_CONFIG_VAR)
    server, child = echo_server(tmp_path, engine="onnxruntime")
    assert json.loads(child) == {"engine": "onnxruntime"}
    assert INFERENCE_CONFIG_VAR not in os.environ
    server, child = echo_server(tmp_path)
    assert child == "<unset>" and server.engine is None  # the model's default


def test_an_unusable_variable_or_engine_is_refused_before_the_server_starts(
        echo_server, tmp_path, monkeypatch):
    monkeypatch.setenv(INFERENCE_CONFIG_VAR, "engine=openvino")
    with pytest.raises(ServeError, match=f"{INFERENCE_CONFIG_VAR} is not JSON"):
        echo_server(tmp_path, engine="torch")
    monkeypatch.setenv(INFERENCE_CONFIG_VAR, '["openvino"]')
    with pytest.raises(ServeError, match="must be a JSON object"):
        echo_server(tmp_path, engine="torch")
    monkeypatch.delenv(INFERENCE_CONFIG_VAR)
    with pytest.raises(ValueError, match="engine must be one of auto, torch, onnxruntime"):
        echo_server(tmp_path, engine="tensorrt")
    assert not list(tmp_path.glob("echo-*.log")), "a server was started"


def test_serve_refuses_an_unknown_engine_with_the_choices(tmp_path):
    result = subprocess.run(
        [str(BIN / "sa2-pipeline"), "serve", "--model", "models:/sa2net-tiny@champion",
         "--engine", "tensorrt", "--log", str(tmp_path / "server.log")],
        check=False, capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(REPO / "src")))
    assert result.returncode == 2, result.stdout + result.stderr
    assert ("Invalid value for '--engine': 'tensorrt' is not one of 'auto', 'torch', "
            "'onnxruntime', 'openvino'.") in result.stderr, result.stderr
    assert "serving" not in result.stdout and not (tmp_path / "server.log").exists()
