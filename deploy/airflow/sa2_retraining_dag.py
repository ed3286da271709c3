"""Airflow 3 DAGs: scheduled retraining of sa2-pipeline, one DAG per dataset.

Each DAG (id ``sa2_retrain_<dataset>``) runs three tasks, each calling the project's own
command line in the project's own venv (Airflow never imports the project):

    detect  ->  retrain  ->  report

* ``detect``: ``sa2-pipeline detect --env <dataset>``; it short-circuits the run (the
  other tasks are skipped) when no new or changed annotated slide is waiting;
* ``retrain``: ``sa2-pipeline retrain --env <dataset>``: verify, version, train, gate,
  promote. Exit code 75 (another retrain holds the dataset's lock) marks it skipped;
* ``report``: ``sa2-pipeline retrain-report --env <dataset>`` prints the retraining record.

``max_active_runs=1`` and ``catchup=False``: runs never overlap and missed intervals are
not replayed (the dataset lock also stops a retrain started by hand at the same time).

Settings, read when Airflow parses this file:

* ``SA2_PROJECT_DIR``: the project checkout (default: two folders above this file);
* ``SA2_PIPELINE_BIN``: its ``sa2-pipeline`` (default ``<project>/.venv/bin/sa2-pipeline``);
* ``SA2_AIRFLOW_DATASETS``: comma-separated datasets (default: ``dvc_datasets.yaml``);
* the schedule: ``retraining.schedule`` in ``conf/<dataset>/parameters.yml``, else in
  ``conf/base/parameters_retraining.yml``, else ``@daily``.
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import yaml
from airflow.providers.standard.operators.bash import BashOperator
from airflow.providers.standard.operators.python import ShortCircuitOperator
from airflow.sdk import DAG

PROJECT_DIR = Path(os.environ.get("SA2_PROJECT_DIR") or Path(__file__).resolve().parents[2])
CLI = os.environ.get("SA2_PIPELINE_BIN") or str(PROJECT_DIR / ".venv" / "bin" / "sa2-pipeline")
DEFAULT_SCHEDULE = "@daily"
LOCK_HELD_EXIT = 75  # sa2-pipeline retrain: another retrain holds the dataset's lock


def _yaml(path: Path) -> dict:
    try:
        return yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}


def datasets() -> list[str]:
    listed = os.environ.get("SA2_AIRFLOW_DATASETS")
    if listed:
        return [d.strip() for d in listed.split(",") if d.strip()]
    return list(_yaml(PROJECT_DIR / "dvc_datasets.yaml").get("datasets") or [])


def schedule_of(dataset: str) -> str | None:
    for path in (PROJECT_DIR / "conf" / dataset / "parameters.yml",
                 PROJECT_DIR / "conf" / "base" / "parameters_retraining.yml"):
        section = _yaml(path).get("retraining") or {}
        if "schedule" in section:
            return section["schedule"]
    return DEFAULT_SCHEDULE


def detect_new_slides(dataset: str) -> bool:
    """True when new or changed slides wait (the run goes on); False short-circuits it."""
    proc = subprocess.run([CLI, "detect", "--env", dataset], cwd=PROJECT_DIR,
                          capture_output=True, text=True, check=False)
    print(proc.stdout[-4000:], proc.stderr[-4000:])
    if proc.returncode != 0:
        raise RuntimeError(f"sa2-pipeline detect --env {dataset} exited {proc.returncode}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return bool(result["retrain"])


def build_dag(dataset: str) -> DAG:
    command = f"cd {json.dumps(str(PROJECT_DIR))} && {json.dumps(CLI)}"
    with DAG(
        dag_id=f"sa2_retrain_{dataset}",
        description=f"Retrain sa2net-{dataset} on new annotated slides, gated promotion",
        schedule=schedule_of(dataset),
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        tags=["sa2-pipeline", "retraining", dataset],
        default_args={"retries": 0, "execution_timeout": timedelta(hours=24)},
    ) as dag:
        detect = ShortCircuitOperator(task_id="detect", python_callable=detect_new_slides,
                                      op_args=[dataset])
        retrain = BashOperator(task_id="retrain",
                               bash_command=f"{command} retrain --env {dataset}",
                               skip_on_exit_code=[LOCK_HELD_EXIT])
        report = BashOperator(task_id="report",
                              bash_command=f"{command} retrain-report --env {dataset}")
        detect >> retrain >> report
    return dag


for _dataset in datasets():
    globals()[f"sa2_retrain_{_dataset}"] = build_dag(_dataset)
