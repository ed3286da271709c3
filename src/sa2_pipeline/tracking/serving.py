"""``mlflow models serve`` in its own process group, stopped as a whole.

``mlflow models serve --env-manager local`` runs ``uvicorn`` as a child process (and
uvicorn its workers). Stopping the ``mlflow`` process alone (Ctrl-C in some shells,
``kill <pid>``, a supervisor) can leave uvicorn listening on the port. :class:`ModelServer`
starts the command with ``start_new_session=True`` (its own process group), waits until
``GET /ping`` answers, and stops the *group*: SIGTERM, then SIGKILL after a grace period,
until no process of the group is left. ``sa2-pipeline serve`` (docs/inference.md,
"Serving") is this module behind a command; the model URI it gets is already resolved to
one version (:func:`~sa2_pipeline.tracking.model_loading.resolve_model`).

The served model's engine is a load-time setting (``tracking/pyfunc.py``): ``mlflow models
serve`` reads it from the environment variable :data:`INFERENCE_CONFIG_VAR`, a JSON object
such as ``{"engine": "openvino"}``. ``ModelServer.start(..., engine=...)`` sets it in the
server's environment only (merged into the value this process has, the engine winning);
this process's own environment is left as it is.

On Linux the starting process becomes a *child subreaper*, so the group's processes that
outlive their parent are reaped here and do not linger as zombies.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from sa2_pipeline.inference.engine_sessions import ENGINES

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "DEFAULT_WORKERS", "INFERENCE_CONFIG_VAR",
           "START_TIMEOUT_S", "STOP_GRACE_S", "ModelServer", "ServeError",
           "default_log_path", "serve_until_signalled", "stop_process_group"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5001
DEFAULT_WORKERS = 1
#: Seconds to wait for ``/ping`` (a small model answers after about 20 s on 2 cores).
START_TIMEOUT_S = 180.0
#: Seconds between SIGTERM and SIGKILL when the server group is stopped.
STOP_GRACE_S = 10.0
_PR_SET_CHILD_SUBREAPER = 36
#: Where ``mlflow models serve`` reads the model's load-time settings (MLflow's
#: ``model_config``) from: a JSON object, e.g. ``{"engine": "openvino"}``.
INFERENCE_CONFIG_VAR = "MLFLOW_PYFUNC_INFERENCE_CONFIG"


class ServeError(RuntimeError):
    """The server did not start, or stopped by itself; the message names its log."""


def default_log_path(label: str, port: int) -> Path:
    """``<tmp>/sa2-serve-<label>-<port>.log``: where the server's output goes."""
    return Path(tempfile.gettempdir()) / f"sa2-serve-{label}-{port}.log"


def _mlflow_command() -> list[str]:
    """The ``mlflow`` of this interpreter's environment."""
    script = Path(sys.executable).parent / "mlflow"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "mlflow"]


def _environment(engine: str | None = None) -> dict[str, str]:
    """A copy of this environment for the server: its ``bin`` first on PATH (``mlflow
    models serve`` starts ``uvicorn`` by name) and, when ``engine`` is given,
    :data:`INFERENCE_CONFIG_VAR` with ``"engine": engine`` merged into its JSON object.

    Raises:
        ServeError: ``engine`` is given and this environment's :data:`INFERENCE_CONFIG_VAR`
            is not a JSON object (it is not overwritten silently).
    """
    path = os.environ.get("PATH", "")
    env = dict(os.environ, PATH=os.pathsep.join(p for p in (str(Path(sys.executable).parent),
                                                             path) if p))
    if engine is not None:
        config = _inference_config(env.get(INFERENCE_CONFIG_VAR))
        env[INFERENCE_CONFIG_VAR] = json.dumps({**config, "engine": engine})
    return env


def _inference_config(value: str | None) -> dict:
    """The JSON object of an :data:`INFERENCE_CONFIG_VAR` value (None or blank: ``{}``)."""
    if value is None or not value.strip():
        return {}
    try:
        config = json.loads(value)
    except ValueError as err:
        raise ServeError(f"{INFERENCE_CONFIG_VAR} is not JSON ({err}): fix or unset it, "
                         f"e.g. {INFERENCE_CONFIG_VAR}='{{\"engine\": \"openvino\"}}'") from err
    if not isinstance(config, dict):
        raise ServeError(f"{INFERENCE_CONFIG_VAR} must be a JSON object such as "
                         f"{{\"engine\": \"openvino\"}}, got {value!r}")
    return config


def _check_port_free(host: str, port: int) -> None:
    """Refuse a port something already listens on (its ``/ping`` would pass for ours)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: TIME_WAIT is fine
        try:
            sock.bind((host, port))
        except OSError as err:
            raise ServeError(f"cannot listen on {host}:{port}: {err.strerror or err} "
                             "(another server on that port? choose --port)") from err


def _become_subreaper() -> None:
    """Adopt the orphans of our descendants (Linux), so that they are reaped here."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _reap_orphans() -> None:
    """Collect the exit status of every adopted process that has ended."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_process_group(leader: subprocess.Popen, grace_s: float = STOP_GRACE_S,
                       hurry: threading.Event | None = None) -> None:
    """SIGTERM the process group led by ``leader``, SIGKILL what is left after
    ``grace_s`` (or as soon as ``hurry`` is set), and return once no process of the group
    remains (bounded: at most ``grace_s`` + 10 s)."""
    pgid = leader.pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    for sig, wait_s in ((signal.SIGKILL, grace_s), (None, 10.0)):
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and not (sig and hurry and hurry.is_set()):
            leader.poll()
            _reap_orphans()
            if leader.returncode is not None and not _group_alive(pgid):
                return
            time.sleep(0.05)
        if sig is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, sig)


class ModelServer:
    """``mlflow models serve`` of one model version, in its own process group.

    Use :meth:`start`; :meth:`stop` (also run at interpreter exit) ends the whole group.
    """

    def __init__(self, process: subprocess.Popen, url: str, log_path: Path,
                 engine: str | None = None) -> None:
        self.process, self.url, self.log_path = process, url, log_path
        #: The engine the server's :data:`INFERENCE_CONFIG_VAR` asks for; None: none
        #: (the model's default).
        self.engine = engine
        self.hurry = threading.Event()

    @property
    def pgid(self) -> int:
        """The server's process group (its leader's pid)."""
        return self.process.pid

    @classmethod
    def start(cls, model_uri: str, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
              workers: int = DEFAULT_WORKERS, log_path: Path,
              engine: str | None = None) -> ModelServer:
        """Start serving ``model_uri`` (a concrete ``models:/<name>/<version>``); the
        server's output goes to ``log_path``. Returns at once: see :meth:`wait_ready`.

        ``engine`` (one of :data:`~sa2_pipeline.inference.engine_sessions.ENGINES`): the
        served model's load-time ``engine``, set in the server's
        :data:`INFERENCE_CONFIG_VAR` (merged into this environment's value, ``engine``
        winning); None leaves that variable as it is (unset: the model's default,
        ``auto``). The server's :attr:`engine` is the engine its environment asks for.

        Raises:
            ValueError: ``engine`` is not one of ``ENGINES``.
            ServeError: ``engine`` is given and this environment's
                :data:`INFERENCE_CONFIG_VAR` is not a JSON object; the port is in use.
        """
        if engine is not None and engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}; got {engine!r}")
        env = _environment(engine)  # a malformed $MLFLOW_PYFUNC_INFERENCE_CONFIG: refused first
        _check_port_free(host, port)
        command = [*_mlflow_command(), "models", "serve", "-m", model_uri,
                   "--env-manager", "local", "--host", host, "--port", str(port),
                   "--workers", str(workers)]
        log_path.parent.mkdir(parents=True, exist_ok=True)
        _become_subreaper()
        with open(log_path, "wb") as log:
            process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL,
                                       stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        url_host = f"[{host}]" if ":" in host else host
        with contextlib.suppress(ServeError):  # unset engine, malformed value: MLflow's to say
            engine = _inference_config(env.get(INFERENCE_CONFIG_VAR)).get("engine")
        server = cls(process, f"http://{url_host}:{port}", log_path, engine)
        atexit.register(server.stop)
        return server

    def log_tail(self, lines: int = 15) -> str:
        """The last ``lines`` lines of the server's log."""
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S,
                   cancelled: Callable[[], bool] = lambda: False) -> bool:
        """Wait until ``GET /ping`` answers 200; False when ``cancelled()`` became true.

        Raises:
            ServeError: The server exited, or did not answer within ``timeout_s``.
        """
        url = self.url.replace("//0.0.0.0:", "//127.0.0.1:").replace("//[::]:", "//[::1]:")
        deadline = time.monotonic() + timeout_s
        while not cancelled():
            with (contextlib.suppress(urllib.error.URLError, ConnectionError, OSError),
                  urllib.request.urlopen(f"{url}/ping", timeout=2) as reply):
                if reply.status == 200:
                    return True
            if self.process.poll() is not None:
                raise ServeError(f"the server exited with code {self.process.returncode} "
                                 f"before answering; its log, {self.log_path}, ends:\n"
                                 f"{self.log_tail()}")
            if time.monotonic() > deadline:
                raise ServeError(f"the server did not answer {url}/ping within "
                                 f"{timeout_s:.0f} s; see its log, {self.log_path}:\n"
                                 f"{self.log_tail()}")
            time.sleep(0.25)
        return False

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """End the whole process group (idempotent)."""
        stop_process_group(self.process, grace_s, self.hurry)
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)


def serve_until_signalled(server: ModelServer, *, timeout_s: float = START_TIMEOUT_S,
                          on_ready: Callable[[], None] = lambda: None,
                          grace_s: float = STOP_GRACE_S) -> int:
    """Wait for the server to be ready, then until SIGINT, SIGTERM or SIGHUP (a second one
    kills at once) or until the server ends by itself; stop its group either way.

    Returns:
        0 when stopped by a signal.

    Raises:
        ServeError: The server did not start, or ended by itself.
    """
    received: list[int] = []

    def _handle(signum: int, _frame: object) -> None:
        if received:
            server.hurry.set()
        received.append(signum)

    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, _handle) for sig in handled}
    try:
        if server.wait_ready(timeout_s, cancelled=lambda: bool(received)):
            on_ready()
            while not received and server.process.poll() is None:
                time.sleep(0.2)
        if not received:
            raise ServeError(f"the server stopped by itself (exit code "
                             f"{server.process.returncode}); see its log, "
                             f"{server.log_path}:\n{server.log_tail()}")
        return 0
    finally:
        server.stop(grace_s)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
