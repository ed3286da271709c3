"""Thread defaults for a shared CPU: automatic count, explicit overrides, passive OpenMP wait."""

import os
import subprocess
import sys

import pytest
import torch

from sa2_pipeline.engine import threads


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
    clean = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    done = subprocess.run([sys.executable, "-c", code], env={**clean, **env},
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_importing_the_package_makes_openmp_wait_passively():
    show = "import os; print(os.environ.get('OMP_WAIT_POLICY', 'unset'))"
    assert _wait_policy_after(f"import sa2_pipeline; {show}") == "PASSIVE"
    # a policy the user chose is kept
    assert _wait_policy_after(f"import sa2_pipeline; {show}", OMP_WAIT_POLICY="ACTIVE") == (
        "ACTIVE")
    # torch already loaded: setting it would not take effect, so it is not pretended
    assert _wait_policy_after(f"import torch, sa2_pipeline; {show}") == "unset"
