"""File locks: one holder at a time, the loser names the holder, a killed holder frees it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sa2_pipeline.locks import (
    LockHeldError,
    dataset_lock_path,
    exclusive_lock,
    read_holder,
    registry_lock_path,
)

_HOLD = textwrap.dedent("""
    import sys, time
    from sa2_pipeline.locks import exclusive_lock
    with exclusive_lock(sys.argv[1], what="test"):
        print("held", flush=True)
        time.sleep(60)
""")


def _holder_process(lock: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(lock)], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_taker_fails_at_once_naming_the_holder(tmp_path):
    lock = tmp_path / "locks" / "retrain-x.lock"
    proc = _holder_process(lock)
    try:
        start = time.monotonic()
        with pytest.raises(LockHeldError) as err, exclusive_lock(lock, what="retrain of x"):
            pass
        assert time.monotonic() - start < 5
        assert err.value.holder["pid"] == proc.pid
        assert f"pid {proc.pid}" in str(err.value) and "started" in str(err.value)
        assert "retrain of x" in str(err.value)
    finally:
        proc.kill()
        proc.wait()


def test_sigkilled_holder_frees_the_lock(tmp_path):
    lock = tmp_path / "a.lock"
    proc = _holder_process(lock)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with exclusive_lock(lock, what="test") as holder:
        assert holder["pid"] == os.getpid()
        assert read_holder(lock)["pid"] == os.getpid()
    assert read_holder(lock) is None  # released: the details go with it


def test_waiting_taker_gets_the_lock_when_the_holder_ends(tmp_path):
    lock = tmp_path / "a.lock"
    proc = _holder_process(lock)
    with pytest.raises(LockHeldError), exclusive_lock(lock, wait=0.3, what="test"):
        pass
    proc.kill()
    proc.wait()
    with exclusive_lock(lock, wait=5, what="test"):
        pass


def test_lock_paths(tmp_path):
    assert dataset_lock_path(tmp_path, "glas") == tmp_path / "data/.locks/retrain-glas.lock"
    db = tmp_path / "store" / "mlflow.db"
    assert registry_lock_path(f"sqlite:///{db}") == db.with_name("mlflow.db.registry.lock")
    relative = registry_lock_path("sqlite:///mlflow.db", tmp_path)
    assert relative == tmp_path / "mlflow.db.registry.lock"
    assert registry_lock_path(f"file://{tmp_path}/mlruns") == tmp_path / "mlruns/.registry.lock"
    a = registry_lock_path("http://127.0.0.1:5000")
    assert a == registry_lock_path("http://127.0.0.1:5000/")
    assert a != registry_lock_path("http://127.0.0.1:5001")
