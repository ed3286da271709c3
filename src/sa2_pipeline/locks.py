"""Exclusive file locks that say who holds them.

A lock is an OS lock (``fcntl.flock`` through :mod:`filelock`) on a file: the kernel drops
it when its process ends, however it ends (SIGKILL included), so a crashed holder never
leaves a stale lock behind. Beside the lock file, the holder writes ``<lock>.holder``
(JSON: pid, host, start time, command) so that a process that cannot take the lock can say
who has it.

Three kinds are used by the project (paths from :func:`dataset_lock_path`,
:func:`registry_lock_path` and the engine's per-run checkpoint folder):

* one per dataset, held by ``sa2-pipeline retrain`` from detection through promotion, and
  by every ``kedro run`` that writes the dataset's outputs (not ``inference``, not
  ``retraining``, whose node takes it itself). The retrain's own ``kedro run`` and ``dvc
  repro`` children run under its lock: a holder advertises the lock to its children
  (:func:`advertised`) and :func:`held_by_ancestor` recognises it;
* one per tracking store, held while a model version is registered and gated;
* one per training run folder, so two runs never train into the same ``last.pt``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlparse

logger = logging.getLogger(__name__)

__all__ = [
    "HELD_LOCKS_ENV",
    "LockHeldError",
    "advertised",
    "dataset_lock_path",
    "exclusive_lock",
    "held_by_ancestor",
    "read_holder",
    "registry_lock_path",
]


class LockHeldError(RuntimeError):
    """Another process holds the lock (``holder``: its pid, host, start time, command)."""

    def __init__(self, path: Path, holder: dict | None, what: str) -> None:
        self.path = Path(path)
        self.holder = holder or {}
        self.what = what
        if holder:
            # The holder says what it is doing (a registration, a rollback...); holders
            # written before it said so are "another <what>", as they used to be.
            doing = holder.get("what") or f"another {what}"
            who = (f"{doing} (pid {holder.get('pid')} on {holder.get('host')}, started "
                   f"{holder.get('started')}: {holder.get('command')})")
        else:
            who = "a process that has not written its details yet"
        super().__init__(f"{who} holds the lock {self.path}, which the {what} needs")


def _holder_path(path: Path) -> Path:
    return path.with_name(path.name + ".holder")


def read_holder(path: str | os.PathLike[str]) -> dict | None:
    """The details the current holder of lock ``path`` wrote, or None."""
    try:
        return json.loads(_holder_path(Path(path)).read_text())
    except (OSError, ValueError):
        return None


def _write_holder(path: Path, what: str) -> dict:
    holder = {
        "what": what,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv)[:300],
    }
    target = _holder_path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(holder))
    os.replace(tmp, target)
    return holder


@contextlib.contextmanager
def exclusive_lock(
    path: str | os.PathLike[str], *, wait: float = 0.0, what: str = "process",
    poll: float = 0.2,
) -> Iterator[dict]:
    """Hold an exclusive lock on ``path`` for the ``with`` block.

    Args:
        path: Lock file (created with its folder).
        wait: Seconds to wait for a holder to finish; 0 fails at once, a negative value
            waits for ever (logging who is waited for).
        what: What the lock protects, for messages (``"retrain of synthetic"``).

    Yields:
        The holder record this process wrote.

    Raises:
        LockHeldError: The lock is still held after ``wait`` seconds; names the holder.
    """
    from filelock import FileLock, Timeout

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), timeout=0)
    deadline = None if wait < 0 else time.monotonic() + wait
    announced = False
    while True:
        try:
            lock.acquire(timeout=0)
            break
        except Timeout:
            holder = _read_holder_soon(path)
            if deadline is not None and time.monotonic() >= deadline:
                raise LockHeldError(path, holder, what) from None
            if not announced:
                logger.info("waiting: %s", LockHeldError(path, holder, what))
                announced = True
            time.sleep(poll)
    try:
        yield _write_holder(path, what)
    finally:
        with contextlib.suppress(OSError):
            held = read_holder(path)
            if held and held.get("pid") == os.getpid():
                _holder_path(path).unlink()
        lock.release()


def _read_holder_soon(path: Path, patience: float = 0.5) -> dict | None:
    """The holder's details; a holder that has just taken the lock writes them at once."""
    deadline = time.monotonic() + patience
    while True:
        holder = read_holder(path)
        if holder is not None or time.monotonic() >= deadline:
            return holder
        time.sleep(0.05)


def dataset_lock_path(project_dir: str | os.PathLike[str], dataset: str) -> Path:
    """``data/.locks/retrain-<dataset>.lock`` in the project."""
    return Path(project_dir) / "data" / ".locks" / f"retrain-{dataset}.lock"


def registry_lock_path(tracking_uri: str, project_dir: str | os.PathLike[str] = ".") -> Path:
    """The lock that serialises registrations and promotions on one tracking store.

    * ``sqlite:///path/mlflow.db``: ``path/mlflow.db.registry.lock``, beside the database,
      so every checkout and process that uses that file shares it.
    * ``file:`` stores and plain paths: ``<store>/.registry.lock``.
    * a server (``http(s)://``, ``databricks``...): a per-user lock keyed by the URI under
      ``$XDG_CACHE_HOME/sa2-pipeline/locks`` (default ``~/.cache``): it serialises every
      checkout of this user on this machine; processes on other machines are not covered
      (docs/retraining.md, "Team mode").
    """
    parsed = urlparse(tracking_uri)
    if parsed.scheme == "sqlite":
        db = unquote(tracking_uri.split(":///", 1)[1]) if ":///" in tracking_uri else ""
        if db and db != ":memory:":
            db_path = Path(db) if Path(db).is_absolute() else Path(project_dir) / db
            return db_path.with_name(db_path.name + ".registry.lock")
    if parsed.scheme in ("", "file"):
        store = Path(unquote(parsed.path) if parsed.scheme == "file" else tracking_uri)
        store = store if store.is_absolute() else Path(project_dir) / store
        return store / ".registry.lock"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    key = hashlib.sha256(tracking_uri.rstrip("/").encode()).hexdigest()[:16]
    return cache / "sa2-pipeline" / "locks" / f"registry-{key}.lock"


#: The locks a process holds for its child processes (paths, ``os.pathsep``-separated).
HELD_LOCKS_ENV = "SA2_HELD_LOCKS"


@contextlib.contextmanager
def advertised(path: str | os.PathLike[str]) -> Iterator[None]:
    """While in the block, child processes see lock ``path`` as held for them.

    Use inside ``exclusive_lock(path)``: the retrain holds the dataset's lock and its
    ``kedro run`` children must not wait for their own parent.
    """
    key = str(Path(path).resolve())
    before = os.environ.get(HELD_LOCKS_ENV)
    os.environ[HELD_LOCKS_ENV] = os.pathsep.join(p for p in (before, key) if p)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(HELD_LOCKS_ENV, None)
        else:
            os.environ[HELD_LOCKS_ENV] = before


def _ancestors() -> set[int] | None:
    """This process's ancestors' pids (Linux ``/proc``); ``None`` where they cannot be read."""
    found, pid = set(), os.getpid()
    try:
        while pid > 1:
            stat = Path(f"/proc/{pid}/stat").read_text()
            pid = int(stat.rsplit(")", 1)[1].split()[1])
            found.add(pid)
    except (OSError, ValueError, IndexError):
        return found or None
    return found


def held_by_ancestor(path: str | os.PathLike[str]) -> bool:
    """Whether lock ``path`` is held, for this process, by one of its ancestors.

    True only when an ancestor advertised it (:func:`advertised`) and the lock's holder
    record names a process among this one's ancestors (where ``/proc`` can tell), so an
    inherited variable alone never lets a process past a lock someone else holds.
    """
    key = str(Path(path).resolve())
    if key not in os.environ.get(HELD_LOCKS_ENV, "").split(os.pathsep):
        return False
    holder = read_holder(path)
    if not holder:
        return False
    ancestors = _ancestors()
    return ancestors is None or holder.get("pid") in ancestors
