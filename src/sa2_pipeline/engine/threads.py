"""CPU threads that degrade gracefully when the machine is shared.

Two things make torch slow on a busy CPU (docs/environment.md, "CPU threads"):

* **Spinning.** GNU OpenMP threads that finish a parallel region busy-wait for the next
  one; with another process on the same cores the spinning threads take the cores from
  the threads that do the work, and a step can get 10-60x slower. ``OMP_WAIT_POLICY=PASSIVE``
  makes them sleep at once. It is read when torch loads its OpenMP runtime, so
  :func:`prefer_passive_wait` runs when :mod:`sa2_pipeline` is imported (before torch,
  in the Kedro and command-line entry points) and only sets a default: an
  ``OMP_WAIT_POLICY`` already in the environment wins.
* **More threads than free cores.** ``num_threads: 0`` (the default everywhere) means
  :func:`auto_threads`: the cores this process may run on, less those other processes keep
  busy right now (running or runnable), at least one.

Every entry point takes an explicit count (``training.num_threads``,
``evaluation.num_threads``, ``sa2-pipeline segment --threads``, the pyfunc's
``num_threads`` parameter, or ``SA2_NUM_THREADS``); any positive value is used as is.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

#: Environment variable that overrides ``0`` (auto) wherever a thread count is taken.
THREADS_ENV = "SA2_NUM_THREADS"


def prefer_passive_wait() -> bool:
    """Default ``OMP_WAIT_POLICY`` to ``PASSIVE`` if torch is not loaded yet; True if set."""
    if "torch" in sys.modules or "OMP_WAIT_POLICY" in os.environ:
        return False
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def other_runnable(samples: int = 5, interval_s: float = 0.01) -> int:
    """Processes other than this one that are running or runnable right now.

    The median over a few reads of /proc/loadavg's ``running/total`` field, less this
    process; 0 where that file does not exist. (The 1-minute load average lags by a
    minute and counts this process's own earlier work.)
    """
    import statistics
    import time

    counts = []
    for i in range(samples):
        try:
            counts.append(int(Path("/proc/loadavg").read_text().split()[3].split("/")[0]))
        except (OSError, IndexError, ValueError):
            return 0
        if i + 1 < samples:
            time.sleep(interval_s)
    return max(0, round(statistics.median(counts)) - 1)


def auto_threads(cores: int | None = None, busy: int | None = None) -> int:
    """Threads for this process: the cores it may use less those others keep busy, >= 1."""
    cores = available_cores() if cores is None else cores
    busy = other_runnable() if busy is None else busy
    return max(1, min(cores, cores - busy))


def resolve_threads(num_threads: int | None) -> int:
    """A positive ``num_threads`` as is; 0/None: ``$SA2_NUM_THREADS``, else :func:`auto_threads`.

    Raises:
        ValueError: a negative count, or a ``SA2_NUM_THREADS`` that is not a positive integer.
    """
    if num_threads is not None and num_threads < 0:
        raise ValueError(f"num_threads must be >= 0 (0 = automatic), got {num_threads}")
    if num_threads:
        return int(num_threads)
    env = os.environ.get(THREADS_ENV, "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise ValueError(f"{THREADS_ENV} must be a positive integer, got {env!r}")
        return int(env)
    return auto_threads()


def configure_threads(num_threads: int | None) -> int:
    """Set torch's intra-op threads to :func:`resolve_threads` (``num_threads``); returns it."""
    import torch

    threads = resolve_threads(num_threads)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    logger.info("torch uses %d thread(s)%s", threads, "" if num_threads else " (automatic)")
    return threads
