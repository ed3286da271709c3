"""Thread defaults for a shared CPU: automatic count, explicit overrides, passive OpenMP wait."""

import os
import subprocess
import sys

import pytest
import torch

from sa2_pipeline.runtime import threads


@pytest.mark.parametrize(("cores", "busy", "expected"), [
    (2, 0, 2), (2, 1, 1), (2, 7, 1), (16, 3, 13), (1, 0, 1),
])
def test_automatic_threads_leave_busy_cores_alone(cores, busy, expected):
    assert threads.auto_threads(cores=cores, busy=busy) == expected


def test_other_runnable_processes_are_counted_without_this_one():
    busy = threads.other_runnable(samples=3, interval_s=0.0)
    assert isinstance(busy, int) and busy >= 0


def test_an_explicit_count_wins_and_the_environment_overrides_auto(monkeypatch):
    monkeypatch.setenv(threads.THREADS_ENV, "3")
    assert threads.resolve_threads(5) == 5
    assert threads.resolve_threads(0) == 3
    assert threads.resolve_threads(None) == 3
    monkeypatch.delenv(threads.THREADS_ENV)
    assert 1 <= threads.resolve_threads(0) <= threads.available_cores()


@pytest.mark.parametrize("bad", ["0", "-1", "two"])
def test_a_bad_environment_value_is_named(monkeypatch, bad):
    monkeypatch.setenv(threads.THREADS_ENV, bad)
    with pytest.raises(ValueError, match="SA2_NUM_THREADS must be a positive integer"):
        threads.resolve_threads(0)


def test_a_negative_count_is_rejected():
    with pytest.raises(ValueError, match="num_threads must be >= 0"):
        threads.resolve_threads(-2)


def test_configure_sets_torch_threads(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setenv(threads.THREADS_ENV, "1")
    try:
        assert threads.configure_threads(0) == 1
        assert torch.get_num_threads() == 1
        assert threads.configure_threads(2) == 2
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def _wait_policy_after(code: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in threads.WAIT_ENV}
    done = subprocess.run([sys.executable, "-c", code], env={**clean, **env},
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_openmp_threads_sleep_only_when_others_keep_the_cpu_busy():
    assert threads.wait_policy_for(0) is None        # idle machine: libgomp's short spin
    assert threads.wait_policy_for(1) == "PASSIVE"
    assert threads.wait_policy_for(5) == "PASSIVE"


ENTRY_POINTS = {
    "kedro command": "from sa2_pipeline.kedro_init import on_kedro_start; on_kedro_start()",
    "kedro session": "import sa2_pipeline.settings",
    "sa2-pipeline": "from sa2_pipeline.cli import main; main(['--help'])",
    "served model": "import sa2_pipeline.tracking.pyfunc_model",
}


def test_each_entry_point_next_to_a_busy_process_makes_openmp_wait_passively():
    show = "import os; print(os.environ.get('OMP_WAIT_POLICY', 'unset'))"
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        for name, entry in ENTRY_POINTS.items():
            out = _wait_policy_after(f"{entry}\n{show}").splitlines()[-1]
            assert out == "PASSIVE", name
        entry = ENTRY_POINTS["sa2-pipeline"]
        # a policy the user chose is kept, and so is a spin count
        assert _wait_policy_after(f"{entry}\n{show}",
                                  OMP_WAIT_POLICY="ACTIVE").splitlines()[-1] == "ACTIVE"
        assert _wait_policy_after(f"{entry}\n{show}",
                                  GOMP_SPINCOUNT="1000").splitlines()[-1] == "unset"
        # torch already loaded: setting it would not take effect, so it is not pretended
        assert _wait_policy_after(f"import torch\n{entry}\n{show}").splitlines()[-1] == "unset"
        # importing the library itself changes nothing in the process
        assert _wait_policy_after(f"import sa2_pipeline.engine.fit\n{show}") == "unset"
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def test_this_process_s_own_running_threads_are_not_counted_as_others(monkeypatch):
    monkeypatch.setattr(threads, "running_tasks", lambda: 3)
    monkeypatch.setattr(threads, "own_running_threads", lambda: 2)  # e.g. a spinning worker
    assert threads.other_runnable(samples=3, interval_s=0.0) == 1
    monkeypatch.setattr(threads, "running_tasks", lambda: None)
    assert threads.other_runnable(samples=3, interval_s=0.0) == 0


def test_a_thread_that_wakes_for_a_moment_is_not_a_busy_core(monkeypatch):
    reads = iter([4, 2, 2, 3, 3, 3])  # a kernel thread runnable in the first read only
    monkeypatch.setattr(threads, "running_tasks", lambda: next(reads))
    monkeypatch.setattr(threads, "own_running_threads", lambda: 2)
    assert threads.other_runnable(samples=3, interval_s=0.0) == 0
    assert threads.other_runnable(samples=3, interval_s=0.0) == 1  # busy in every read


def test_own_running_threads_sees_a_busy_torch_worker():
    import threading

    stop = threading.Event()
    a = torch.randn(256, 256)

    def work():
        while not stop.is_set():
            a @ a  # releases the GIL: this thread stays running

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    try:
        seen = max(threads.own_running_threads() for _ in range(50))
    finally:
        stop.set()
        worker.join()
    assert seen >= 2  # the caller and the worker


def test_the_rebalancer_follows_the_free_cores_after_every_epoch(monkeypatch):
    from sa2_pipeline.engine.callbacks import ThreadRebalancer

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.setattr(threads, "auto_threads", lambda: 1)
        ThreadRebalancer().on_epoch_end(None, {})
        assert torch.get_num_threads() == 1
        monkeypatch.setattr(threads, "auto_threads", lambda: 2)
        ThreadRebalancer().on_epoch_end(None, {})
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_only_an_automatic_single_process_cpu_run_rebalances(monkeypatch):
    from types import SimpleNamespace

    from sa2_pipeline.engine.builders import _thread_callbacks
    from sa2_pipeline.engine.callbacks import ThreadRebalancer

    monkeypatch.delenv(threads.THREADS_ENV, raising=False)
    one = SimpleNamespace(distributed=False)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    auto, fixed = SimpleNamespace(num_threads=0), SimpleNamespace(num_threads=2)
    assert [type(c) for c in _thread_callbacks(auto, cpu, one)] == [ThreadRebalancer]
    assert _thread_callbacks(fixed, cpu, one) == []
    assert _thread_callbacks(auto, cuda, one) == []
    assert _thread_callbacks(auto, cpu, SimpleNamespace(distributed=True)) == []
    monkeypatch.setenv(threads.THREADS_ENV, "1")
    assert _thread_callbacks(auto, cpu, one) == []
