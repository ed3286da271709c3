"""Opt-in (``-m airflow``): ``airflow dags test`` of a dataset's DAG on SQLite against a
tiny project copy. The first run detects the (generated) data, retrains and reports; the
second finds nothing new and short-circuits, registering nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.airflow,
              pytest.mark.filterwarnings("ignore::DeprecationWarning:mlflow")]

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def _airflow(project, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    airflow = Path(os.environ.get("SA2_AIRFLOW_PYTHON") or
                   REPO_ROOT / ".venv-airflow" / "bin" / "python").parent / "airflow"
    if not airflow.exists():
        pytest.skip(f"no Airflow at {airflow}: run `make airflow-venv`")
    env = {k: v for k, v in project.env.items() if not k.startswith("AIRFLOW")}
    env.update(AIRFLOW_HOME=str(home), AIRFLOW__CORE__LOAD_EXAMPLES="False",
               AIRFLOW__CORE__DAGS_FOLDER=str(project.root / "deploy" / "airflow"),
               SA2_PROJECT_DIR=str(project.root),
               SA2_PIPELINE_BIN=str(VENV_BIN / "sa2-pipeline"))
    return project.run(str(airflow), *args, env=env, timeout=1500)


def test_airflow_dags_test_retrains_then_short_circuits(make_project_copy, tmp_path):
    project = make_project_copy("airflow-dag", tiny_config_in="base")
    home = tmp_path / "airflow-home"
    _airflow(project, home, "db", "migrate")

    first = _airflow(project, home, "dags", "test", "sa2_retrain_synthetic", "2026-01-02")
    record = project.data("08_reporting", "retraining", "latest.json")
    assert record.is_file(), first.stdout[-5000:]
    assert json.loads(record.read_text())["decision"] == "promoted"  # the first model
    assert "sa2net-synthetic" in first.stdout  # the report task printed the record

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=project.tracking_uri, registry_uri=project.tracking_uri)
    assert len(client.search_model_versions("name = 'sa2net-synthetic'")) == 1
    second = _airflow(project, home, "dags", "test", "sa2_retrain_synthetic", "2026-01-03")
    assert '"retrain": false' in second.stdout, second.stdout[-5000:]
    assert len(client.search_model_versions("name = 'sa2net-synthetic'")) == 1
