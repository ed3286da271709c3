"""A tracking server that is down or never answers: the command fails in bounded time and
says so, naming the URI, instead of retrying for minutes and blaming something else."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def _run(uri: str, *args: str, **env: str) -> tuple[subprocess.CompletedProcess, float]:
    full = dict(os.environ, MLFLOW_TRACKING_URI=uri, KEDRO_DISABLE_TELEMETRY="1", **env)
    for key in ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
                "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"):
        if key not in env:
            full.pop(key, None)
    start = time.monotonic()
    proc = subprocess.run([str(BIN / "sa2-pipeline"), *args], env=full, capture_output=True,
                          text=True, timeout=300, check=False)
    return proc, time.monotonic() - start


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def silent_server():
    """A port that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(2)
    for conn in held:
        conn.close()
    server.close()


def test_a_refused_port_fails_fast_naming_the_server():
    uri = f"http://127.0.0.1:{_free_port()}"
    proc, seconds = _run(uri, "rollback", "--model", "sa2net-x", "--to-version", "1")
    assert proc.returncode != 0
    assert uri in proc.stderr and "did not answer" in proc.stderr, proc.stderr
    assert "has no version" not in proc.stderr and "Traceback" not in proc.stderr
    assert seconds < 60, seconds  # MLflow's own defaults took about 4 minutes


def test_a_server_that_never_answers_fails_after_the_documented_wait(silent_server):
    proc, seconds = _run(silent_server, "rollback", "--model", "sa2net-x", "--to-version",
                         "1", MLFLOW_HTTP_REQUEST_TIMEOUT="2")
    assert proc.returncode != 0
    assert silent_server in proc.stderr and "2 s per request" in proc.stderr, proc.stderr
    assert seconds < 60, seconds


def test_the_entry_points_bound_mlflow_s_http_waits():
    from sa2_pipeline.tracking.server import HTTP_DEFAULTS, bound_http_requests

    env = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    chosen = bound_http_requests(env)
    assert env["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "5"  # the user's setting wins
    assert chosen == {k: v for k, v in HTTP_DEFAULTS.items()
                      if k != "MLFLOW_HTTP_REQUEST_TIMEOUT"}


def test_rollback_outside_the_project_creates_no_store(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.run([str(BIN / "sa2-pipeline"), "rollback", "--model", "sa2net-x",
                           "--to-version", "1"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 1
    assert "no MLflow tracking store here" in proc.stderr and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []  # no stray mlflow.db


def test_a_password_in_the_tracking_uri_is_never_shown():
    """`http://user:pw@host` is a way to pass basic-auth credentials; the message naming
    the server shows `user:***`, never the password (issue 24, team-mode security)."""
    port = _free_port()
    uri = f"http://svc:s3cret-Pa55@127.0.0.1:{port}"
    proc, _ = _run(uri, "rollback", "--model", "sa2net-x", "--to-version", "1")
    assert proc.returncode != 0
    assert f"http://svc:***@127.0.0.1:{port}" in proc.stderr, proc.stderr
    assert "s3cret-Pa55" not in proc.stderr + proc.stdout


def test_redact_uri_keeps_everything_but_the_password():
    from sa2_pipeline.io_utils import redact_uri

    assert redact_uri("https://u:p@h.example:8443/mlflow?x=1") == \
        "https://u:***@h.example:8443/mlflow?x=1"
    for plain in ("http://h:5000", "sqlite:///tmp/mlflow.db", "https://u@h", "databricks"):
        assert redact_uri(plain) == plain
