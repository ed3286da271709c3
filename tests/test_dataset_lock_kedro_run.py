"""Issue 24, hostile 14: a plain `kedro run` while `sa2-pipeline retrain` holds the dataset's
lock. It should not run: it would rewrite the manifest, model inputs and models the
retrain is training and gating. It stops before any node and before an MLflow run opens,
naming the retrain; the retrain's own `kedro run` children, and `kedro run --pipelines
inference`, are not stopped."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kedro_project import kedro_run, make_project_copy

ROOT = Path(__file__).resolve().parents[1]

# Holds the dataset's lock as `sa2-pipeline retrain` does; with "advertise", also runs
# `kedro run ARGS` as its child, as the retrain does.
_RETRAIN = textwrap.dedent("""
    import os, subprocess, sys, time
    from sa2_pipeline.locks import advertised, dataset_lock_path, exclusive_lock
    root, mode, *args = sys.argv[1:]
    lock = dataset_lock_path(root, "synthetic")
    with exclusive_lock(lock, what="retrain of synthetic"), advertised(lock):
        if mode == "advertise":
            proc = subprocess.run(args, cwd=root, capture_output=True, text=True)
            print(proc.stdout + proc.stderr, flush=True)
            sys.exit(proc.returncode)
        print("held", flush=True)
        time.sleep(120)
""")


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return make_project_copy(tmp_path_factory.mktemp("locked") / "project")


def _env(root: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "KEDRO_DISABLE_TELEMETRY": "1",
            "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db"}


def test_kedro_run_during_a_retrain_is_refused_naming_it(project):
    holder = subprocess.Popen([sys.executable, "-c", _RETRAIN, str(project), "hold"],
                              env=_env(project), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        result = kedro_run(project, "--pipelines", "data_ingestion")
        out = result.stdout + result.stderr
        assert result.returncode != 0
        assert f"retrain of synthetic (pid {holder.pid}" in out, out[-3000:]
        assert "was not started" in out and "Traceback" not in out, out[-3000:]
        # stopped before any node: nothing ingested, no MLflow run opened
        assert not (project / "data" / "02_intermediate").exists()
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=f"sqlite:///{project}/mlflow.db")
        experiments = [e.experiment_id for e in client.search_experiments()]
        assert client.search_runs(experiments) == []
    finally:
        holder.kill()
        holder.wait()


def test_the_retrain_s_own_kedro_run_and_inference_pass_the_lock(project):
    """A child of the holder passes; so does inference, which writes no dataset output.
    Both then fail later for their own reason (no inputs / no champion in this bare
    project), which shows they got past the lock."""
    kedro = str(Path(sys.executable).parent / "kedro")
    child = subprocess.run([sys.executable, "-c", _RETRAIN, str(project), "advertise", kedro,
                            "run", "--pipelines", "reporting"],
                           env=_env(project), capture_output=True, text=True, timeout=600,
                           check=False)
    out = child.stdout + child.stderr
    assert "retrain of synthetic" not in out and "was not started" not in out, out[-3000:]
    holder = subprocess.Popen([sys.executable, "-c", _RETRAIN, str(project), "hold"],
                              env=_env(project), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        result = kedro_run(project, "--pipelines", "inference")
        out = result.stdout + result.stderr
        assert "was not started" not in out, out[-3000:]
    finally:
        holder.kill()
        holder.wait()
