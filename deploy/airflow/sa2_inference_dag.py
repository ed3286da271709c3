"""Airflow 3 DAGs: slide inference of sa2-pipeline split into parts, one DAG per dataset.

Each DAG (id ``sa2_inference_<dataset>``, triggered by hand or by an API call: no
schedule) fans the inputs of ``inference.input_dir`` out over parts, one mapped task
each (dynamic task mapping), calling the project's own command line in the project's own
venv (Airflow never imports the project):

    plan  ->  segment[0] .. segment[N-1]  ->  merge

* ``plan``: ``sa2-pipeline kubeflow list-inputs --env <dataset>`` resolves the model to
  one version (``models:/<name>@champion`` -> ``models:/<name>/<version>``, so every part
  uses the same one) and returns one record per part; N is the run's ``num_parts`` param,
  or ``inference.num_parts`` of the dataset when it is 0;
* ``segment`` (``.expand`` over the records): ``kedro run --pipelines inference --params
  inference.num_parts=N,inference.part_id=K,...``; the folder run is resumable, so a retry
  (``retries=2``) or a cleared task redoes only the inputs that were not finished;
* ``merge``: ``sa2-pipeline kubeflow merge`` writes ``run_index.json`` over every input's
  record and fails if one has none.

The same pipeline on Kubeflow is deploy/kubeflow/pipelines.py (docs/kubeflow.md).
Settings, read when Airflow parses this file: ``SA2_PROJECT_DIR``, ``SA2_PIPELINE_BIN``
and ``SA2_AIRFLOW_DATASETS``, as for the retraining DAGs (sa2_retraining_dag.py).
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import yaml
from airflow.sdk import DAG, Param, task

PROJECT_DIR = Path(os.environ.get("SA2_PROJECT_DIR") or Path(__file__).resolve().parents[2])
CLI = os.environ.get("SA2_PIPELINE_BIN") or str(PROJECT_DIR / ".venv" / "bin" / "sa2-pipeline")
PART_RETRIES = 2


def datasets() -> list[str]:
    listed = os.environ.get("SA2_AIRFLOW_DATASETS")
    if listed:
        return [d.strip() for d in listed.split(",") if d.strip()]
    try:
        content = yaml.safe_load((PROJECT_DIR / "dvc_datasets.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return []
    return list(content.get("datasets") or [])


def _cli(*args: str) -> dict | list:
    """Run the project's CLI in the project; its last stdout line is JSON."""
    proc = subprocess.run([CLI, *args], cwd=PROJECT_DIR, capture_output=True, text=True,
                          check=False)
    print(proc.stdout[-4000:], proc.stderr[-4000:])
    if proc.returncode != 0:
        raise RuntimeError(f"sa2-pipeline {' '.join(args)} exited {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def plan_parts(dataset: str, num_parts: int | str) -> list[dict]:
    plan = _cli("kubeflow", "list-inputs", "--env", dataset, "--num-parts", str(num_parts))
    return [{"part_id": k, "num_parts": plan["num_parts"], "model_uri": plan["model_uri"],
             "out_dir": plan["out_dir"]} for k in plan["parts"]]


def segment_part(dataset: str, part: dict) -> dict:
    params = (f"inference.num_parts={part['num_parts']},inference.part_id={part['part_id']},"
              f"inference.model_uri={part['model_uri']},inference.progress=false")
    kedro = str(Path(CLI).parent / "kedro")
    proc = subprocess.run([kedro, "run", "--pipelines", "inference", "--env", dataset,
                           "--params", params], cwd=PROJECT_DIR, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"part {part['part_id']}: kedro run --pipelines inference "
                           f"exited {proc.returncode} (the number of failed inputs)")
    return part


def merge_parts(dataset: str, parts: list[dict]) -> dict:
    return _cli("kubeflow", "merge", "--env", dataset, "--out-dir", parts[0]["out_dir"])


def build_dag(dataset: str) -> DAG:
    with DAG(
        dag_id=f"sa2_inference_{dataset}",
        description=f"Segment the new slides of {dataset}, one mapped task per part",
        schedule=None,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,  # two runs would share (and race on) the output folder
        tags=["sa2-pipeline", "inference", dataset],
        params={"num_parts": Param(0, type="integer", minimum=0,
                                   description="parts (0: inference.num_parts)")},
        default_args={"retries": 0, "execution_timeout": timedelta(hours=24)},
    ) as dag:
        @task(task_id="plan")
        def plan(num_parts: str) -> list[dict]:
            return plan_parts(dataset, num_parts)

        @task(task_id="segment", retries=PART_RETRIES, retry_delay=timedelta(seconds=30))
        def segment(part: dict) -> dict:
            return segment_part(dataset, part)

        @task(task_id="merge")
        def merge(parts: list[dict]) -> dict:
            return merge_parts(dataset, list(parts))

        merge(segment.expand(part=plan("{{ params.num_parts }}")))
    return dag


for _dataset in datasets():
    globals()[f"sa2_inference_{_dataset}"] = build_dag(_dataset)
