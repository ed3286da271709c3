"""CPU threads that degrade gracefully when the machine is shared.

Two things make torch slow on a busy CPU (docs/environment.md, "CPU threads"):

* **Spinning.** GNU OpenMP threads that finish a parallel region busy-wait for the next
  one; with another process on the same cores the spinning threads take the cores from
  the threads that do the work, and a step can get 10-60x slower. ``OMP_WAIT_POLICY=PASSIVE``
  makes them sleep at once, but on an idle machine waking them for every parallel region
  costs 5-10 % (Zen 3) to 45 % (Zen 5) of a small model's training. So
  :func:`choose_wait_policy`, run by the entry points before torch is imported (the
  ``kedro`` command and project settings, ``sa2-pipeline``, the served model), sets
  ``PASSIVE`` only when other processes keep cores busy at that moment; a policy (or
  ``GOMP_SPINCOUNT``) already in the environment wins.
* **More threads than free cores.** ``num_threads: 0`` (the default everywhere) means
  :func:`auto_threads`: the cores this process may run on, less those other processes keep
  busy right now (running or runnable), at least one. A CPU training with the automatic
  count checks again after every epoch (:class:`ThreadRebalancer`), so two trainings
  that started together on an idle machine settle on one core each instead of fighting.

Every entry point takes an explicit count (``training.num_threads``,
``evaluation.num_threads``, ``sa2-pipeline segment --threads``, the pyfunc's
``num_threads`` parameter, or ``SA2_NUM_THREADS``); any positive value is used as is,
and never changes during a run.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

#: Environment variable that overrides ``0`` (auto) wherever a thread count is taken.
THREADS_ENV = "SA2_NUM_THREADS"


#: Environment variables that already decide how idle OpenMP threads wait.
WAIT_ENV = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def choose_wait_policy() -> str | None:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` when other processes keep cores busy now, torch is
    not loaded yet and the environment does not decide already; returns what it set."""
    if "torch" in sys.modules or any(name in os.environ for name in WAIT_ENV):
        return None
    policy = wait_policy_for(other_runnable(samples=3, interval_s=0.005))
    if policy is not None:
        os.environ["OMP_WAIT_POLICY"] = policy
    return policy


def wait_policy_for(busy: int) -> str | None:
    """``PASSIVE`` when ``busy`` threads of other processes are running, else None (leave
    libgomp's default: spin about 3 ms, then sleep; the fast choice on an idle machine)."""
    return "PASSIVE" if busy >= 1 else None


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def other_runnable(samples: int = 5, interval_s: float = 0.01) -> int:
    """Threads of other processes that are running or runnable right now.

    The fewest seen over a few reads of /proc/loadavg's ``running/total`` field, each less
    this process's own running threads at that moment (an OpenMP worker still spinning
    after the last parallel region counts as running: it must not read as another
    process's); 0 where the file does not exist. The fewest, not the median: a process
    that keeps a core busy is running in every read, while kernel threads and short jobs
    that wake for a moment are not, and must not take a core from a training (with the
    median, a solo `kedro run` on the Zen 5 EPYC dropped to one thread for 3 of 24 epochs).
    (The 1-minute load average lags by a minute and counts this process's own earlier work.)
    """
    import time

    counts = []
    for i in range(samples):
        running = running_tasks()
        if running is None:
            return 0
        counts.append(max(0, running - own_running_threads()))
        if i + 1 < samples:
            time.sleep(interval_s)
    return min(counts)


def running_tasks() -> int | None:
    """Running or runnable threads on the machine (/proc/loadavg), None where unknown."""
    try:
        return int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
    except (OSError, IndexError, ValueError):
        return None


def own_running_threads() -> int:
    """This process's threads in state R (running or runnable), at least 1: the caller."""
    running = 0
    for stat in Path("/proc/self/task").glob("*/stat"):  # nothing where /proc is absent
        try:
            state = stat.read_text().rpartition(")")[2].split()[:1]
        except OSError:  # the thread ended meanwhile
            continue
        running += state == ["R"]
    return max(1, running)


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


def is_automatic(num_threads: int | None) -> bool:
    """Whether ``num_threads`` leaves the count to :func:`auto_threads`."""
    return not num_threads and not os.environ.get(THREADS_ENV, "").strip()


def worker_init(worker_id: int) -> None:  # noqa: ARG001 - DataLoader signature
    """DataLoader workers use one torch/OpenCV thread so they never fight the main process."""
    import torch

    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:  # pragma: no cover
        pass
