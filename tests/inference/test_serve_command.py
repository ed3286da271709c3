"""``sa2-pipeline serve``: the alias is resolved to one version, the server answers, and
SIGTERM to the command leaves no process of the server's group and nothing on the port.
``--engine``: tests/inference/test_serve_engine.py."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
from inference_helpers import he_image

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


#: Not the default host (127.0.0.1): every 127/8 address is loopback on Linux.
HOST = "127.0.0.2"


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


def _reap(proc: subprocess.Popen, pgid: int | None) -> None:
    """A test's clean-up of ``sa2-pipeline serve``: the command and its server's group."""
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=30)
    if pgid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    proc.stdout.close()


def _group_processes(pgid: int) -> list[Path]:
    """The ``/proc/<pid>`` folders of the processes in ``pgid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[2]) == pgid:
                found.append(stat.parent)
    return found


def _workers(pgid: int) -> list[str]:
    """Command lines of the uvicorn worker processes (spawned children) in ``pgid``."""
    found = []
    for proc in _group_processes(pgid):
        with contextlib.suppress(OSError):
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            if "spawn_main" in cmd:
                found.append(cmd)
    return found


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _read_until(proc: subprocess.Popen, pattern: str, seen: list[str],
                timeout_s: float) -> re.Match:
    """Read the command's output lines until one matches ``pattern``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        seen.append(line)
        if match := re.search(pattern, line):
            return match
    raise AssertionError(f"no line matching {pattern!r} in:\n{''.join(seen)}")


def test_serve_answers_and_sigterm_leaves_no_process_and_a_free_port(tiny_model, tmp_path):
    port, log = _free_port(), tmp_path / "server.log"
    cache = tmp_path / "engine-cache"  # auto measures here, not in a cache of other tests
    env = dict(os.environ, MLFLOW_TRACKING_URI=tiny_model.tracking_uri,
               PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1", SA2_CACHE_DIR=str(cache))
    env.pop("MLFLOW_PYFUNC_INFERENCE_CONFIG", None)
    proc = subprocess.Popen(
        [str(BIN / "sa2-pipeline"), "serve", "--model", tiny_model.uri, "--port", str(port),
         "--log", str(log), "--host", HOST, "--workers", "2"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: list[str] = []
    pgid = None
    try:
        assert _read_until(proc, r"as version (\d+) \(models:/sa2net-tiny/1\)", seen, 60)
        pgid = int(_read_until(proc, r"process group (\d+)", seen, 30)[1])
        # no --engine: the model's default, auto, which measures the engines in the server
        _read_until(proc, r"^engine: auto \(the model's default load-time setting\)$", seen,
                    30)
        _read_until(proc, rf"ready: http://{re.escape(HOST)}:\d+/invocations", seen, 240)
        assert list(cache.glob("engine-*.json")), "auto measured nothing in the server"
        # --host: it listens on that address only; --workers 2: two worker processes
        assert not _port_open(port), "--host 127.0.0.2 also listens on 127.0.0.1"
        assert len(_workers(pgid)) >= 2, _workers(pgid)  # default (1): none spawned

        image = he_image(64, 72, seed=4)
        request = urllib.request.Request(
            f"http://{HOST}:{port}/invocations",
            data=json.dumps({"inputs": image.tolist()}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as reply:
            assert reply.status == 200
            mask = np.asarray(json.loads(reply.read())["predictions"])
        assert mask.shape == (64, 72) and set(np.unique(mask)) <= {0, 1}

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, "".join(seen) + proc.stdout.read()
        # serve returns only once its server's group is gone: no grace period needed here
        assert not _group_alive(pgid), "a process of the server's group is still running"
        assert not _port_open(port, HOST), "something still listens on the port"
        assert "server stopped" in proc.stdout.read()
        assert log.stat().st_size > 0  # --log: the server's output went where asked
    finally:
        _reap(proc, pgid)


def test_serve_refuses_a_port_in_use_and_an_unknown_model(tiny_model, tmp_path):
    env = dict(os.environ, MLFLOW_TRACKING_URI=tiny_model.tracking_uri,
               PYTHONPATH=str(REPO / "src"))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [str(BIN / "sa2-pipeline"), "serve", "--model", tiny_model.uri, "--port",
             str(port), "--log", str(tmp_path / "server.log")],
            check=False, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr, result.stderr
    result = subprocess.run(
        [str(BIN / "sa2-pipeline"), "serve", "--model", "models:/sa2net-tiny@nothing"],
        check=False, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "not found in the registry" in result.stderr, \
        result.stderr


def test_a_server_not_ready_within_start_timeout_is_stopped_and_named(tiny_model, tmp_path):
    env = dict(os.environ, MLFLOW_TRACKING_URI=tiny_model.tracking_uri,
               PYTHONPATH=str(REPO / "src"))
    log = tmp_path / "slow.log"
    result = subprocess.run(
        [str(BIN / "sa2-pipeline"), "serve", "--model", tiny_model.uri, "--port",
         str(_free_port()), "--log", str(log), "--start-timeout", "1"],
        check=False, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert str(log) in result.stderr, result.stderr
    pgid = int(re.search(r"process group (\d+)", result.stdout)[1])
    assert not _group_alive(pgid), "the server that missed its start-up time still runs"

