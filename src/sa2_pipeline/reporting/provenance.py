"""Where a run's numbers come from: code version, data version, MLflow run (no MLflow import)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sa2_pipeline.io_utils import redact_uri


def git_commit(root: str | Path = ".") -> str:
    """``<sha>`` of HEAD, ``+dirty`` when tracked files differ from it; ``unknown`` outside git."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}+dirty" if dirty else sha


def dvc_data_version(root: str | Path, dataset: str) -> str | None:
    """The DVC hash of ``data/01_raw/<dataset>`` recorded in ``dvc.lock``, if any."""
    import yaml

    lock = Path(root) / "dvc.lock"
    if not lock.is_file():
        return None
    try:
        stages = yaml.safe_load(lock.read_text(encoding="utf-8")).get("stages", {})
    except (yaml.YAMLError, AttributeError):
        return None
    wanted = f"data/01_raw/{dataset}"
    for stage in stages.values():
        for out in stage.get("outs", []) or []:
            if out.get("path") == wanted:
                return out.get("md5") or out.get("hash")
    return None


def mlflow_run_link(
    tracking_uri: str | None, experiment_id: str | None, run_id: str | None
) -> str | None:
    """URL of the run in the MLflow UI: the tracking server itself when it is one, else the
    local ``mlflow ui`` address (http://127.0.0.1:5000)."""
    if not run_id:
        return None
    base = "http://127.0.0.1:5000"
    if tracking_uri and tracking_uri.startswith(("http://", "https://")):
        base = redact_uri(tracking_uri).rstrip("/")
    return f"{base}/#/experiments/{quote(str(experiment_id or '0'))}/runs/{quote(run_id)}"


def active_mlflow_run() -> dict[str, Any]:
    """Tracking URI, experiment and run of the active MLflow run when mlflow is loaded."""
    import sys

    mlflow = sys.modules.get("mlflow")
    if mlflow is None or mlflow.active_run() is None:
        return {}
    run = mlflow.active_run()
    return {
        # a password written into the URI never reaches the report
        "tracking_uri": redact_uri(mlflow.get_tracking_uri()),
        "experiment_id": run.info.experiment_id,
        "run_id": run.info.run_id,
    }


def collect_provenance(
    root: str | Path, dataset: str | None, test_set_id: str | None, fallback_run_id: str | None,
    data_version: str | None = None,
) -> dict[str, Any]:
    """The report's provenance rows: dataset and its version (``data_version`` as the
    registry recorded it, else the DVC hash of the raw data in dvc.lock), the frozen
    test-set id, the git commit, and the MLflow run (the active one, else
    ``fallback_run_id``)."""
    run = active_mlflow_run()
    run_id = run.get("run_id") or fallback_run_id
    return {
        "dataset": dataset or "unknown",
        "data_version": data_version or dvc_data_version(root, dataset),
        "test_set_id": test_set_id,
        "git_commit": git_commit(root),
        "mlflow_run_id": run_id,
        "mlflow_run_link": mlflow_run_link(
            run.get("tracking_uri"), run.get("experiment_id"), run_id
        ),
        "tracking_uri": run.get("tracking_uri"),
    }
