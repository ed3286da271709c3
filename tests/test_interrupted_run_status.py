"""An MLflow run stopped with Ctrl-C (SIGINT) ends KILLED; without the hook it ended FINISHED.

A child process opens an MLflow run, lets the project's hook prepare as Kedro would
before a pipeline, reports the run id and works until the test sends it SIGINT.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

_CHILD = textwrap.dedent("""
    import sys, time
    import mlflow
    from sa2_pipeline.hooks import InterruptedRunHook
    mlflow.set_tracking_uri(sys.argv[1])
    run = mlflow.start_run()
    if sys.argv[2] == "hook":
        InterruptedRunHook().before_pipeline_run(run_params={}, pipeline=None, catalog=None)
    print(run.info.run_id, flush=True)
    while True:
        time.sleep(0.05)
""")


def _interrupted_status(tmp_path: Path, mode: str) -> str:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    leaked = ("MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID")  # ids of another test's store
    env = {k: v for k, v in os.environ.items() if k not in leaked}
    env["PYTHONPATH"] = str(ROOT / "src")
    child = subprocess.Popen([sys.executable, "-c", _CHILD, uri, mode], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        run_id = child.stdout.readline().strip()
        assert run_id, child.stderr.read()
        child.send_signal(signal.SIGINT)
        child.wait(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode != 0  # it was interrupted, not finished
    return MlflowClient(tracking_uri=uri).get_run(run_id).info.status


@pytest.mark.parametrize(("mode", "status"), [("hook", "KILLED"), ("none", "FINISHED")])
def test_ctrl_c_ends_the_run_killed(tmp_path, mode, status):
    """With the hook: KILLED. The control without it shows MLflow's FINISHED."""
    assert _interrupted_status(tmp_path, mode) == status


def test_the_hook_is_registered_for_kedro_runs():
    from sa2_pipeline import settings
    from sa2_pipeline.hooks import InterruptedRunHook

    assert any(isinstance(hook, InterruptedRunHook) for hook in settings.HOOKS)


_KILLED_CHILD = textwrap.dedent("""
    import sys, time
    import mlflow
    from sa2_pipeline.hooks import OrphanedRunHook
    mlflow.set_tracking_uri(sys.argv[1])
    mlflow.set_experiment("orphans")
    run = mlflow.start_run()
    if sys.argv[2] == "hook":
        OrphanedRunHook().before_pipeline_run(run_params={}, pipeline=None, catalog=None)
    print(run.info.run_id, flush=True)
    while True:
        time.sleep(0.05)
""")


def _sigkilled_run(uri: str, mode: str) -> str:
    leaked = ("MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID")
    env = {k: v for k, v in os.environ.items() if k not in leaked}
    env["PYTHONPATH"] = str(ROOT / "src")
    child = subprocess.Popen([sys.executable, "-c", _KILLED_CHILD, uri, mode], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        run_id = child.stdout.readline().strip()
        assert run_id, child.stderr.read()
    finally:
        child.kill()  # SIGKILL: no handler runs, MLflow cannot end the run
        child.wait(timeout=60)
    return run_id


def test_a_sigkilled_run_is_ended_killed_by_the_next_run(tmp_path, monkeypatch):
    """Issue 24, hostile 14: a run SIGKILLed before its first checkpoint stayed RUNNING for
    good. The next `kedro run` (its OrphanedRunHook) in the experiment ends it KILLED; a run
    started without the hook's process tags (the control) is left alone, and so is a live
    one."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from sa2_pipeline import settings
    from sa2_pipeline.hooks import OrphanedRunHook

    assert any(isinstance(hook, OrphanedRunHook) for hook in settings.HOOKS)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    killed, untagged = _sigkilled_run(uri, "hook"), _sigkilled_run(uri, "none")
    client = MlflowClient(tracking_uri=uri)
    assert client.get_run(killed).info.status == "RUNNING"  # what MLflow leaves

    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    mlflow.set_tracking_uri(uri)
    try:
        mlflow.set_experiment("orphans")
        with mlflow.start_run() as current:
            OrphanedRunHook().before_pipeline_run(run_params={}, pipeline=None, catalog=None)
            assert client.get_run(current.info.run_id).info.status == "RUNNING"
    finally:
        mlflow.set_tracking_uri(None)
    found = client.get_run(killed)
    assert found.info.status == "KILLED"
    assert found.data.tags["sa2.ended_by"].startswith(f"run {current.info.run_id}")
    assert client.get_run(untagged).info.status == "RUNNING"
