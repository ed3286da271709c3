"""The Airflow DAGs (deploy/airflow): parsed by a real Airflow DagBag, no database.

Airflow lives in its own venv (``make airflow-venv`` -> ``.venv-airflow``, or
``SA2_AIRFLOW_PYTHON``), never in the project's: see docs/retraining.md. The opt-in test
(``-m airflow``) runs ``airflow dags test`` on SQLite against a tiny project copy.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DAG_FOLDER = REPO_ROOT / "deploy" / "airflow"

_PARSE = textwrap.dedent("""
    import json, sys, time
    from airflow.dag_processing.dagbag import DagBag
    start = time.perf_counter()
    bag = DagBag(dag_folder=sys.argv[1])
    out = {"errors": {k: str(v) for k, v in bag.import_errors.items()},
           "parse_s": time.perf_counter() - start, "dags": {}}
    for dag_id, dag in bag.dags.items():
        out["dags"][dag_id] = {
            "timetable": type(dag.timetable).__name__,
            "expression": getattr(dag.timetable, "expression", None)
                          or vars(dag.timetable).get("_expression"),
            "max_active_runs": dag.max_active_runs, "catchup": dag.catchup,
            "downstream": {t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks},
            "types": {t.task_id: type(t).__name__ for t in dag.tasks},
            "bash": {t.task_id: getattr(t, "bash_command", None) for t in dag.tasks},
            "skip": {t.task_id: getattr(t, "skip_on_exit_code", None) for t in dag.tasks}}
    print("DAGBAG " + json.dumps(out))
""")


def airflow_python() -> Path:
    explicit = os.environ.get("SA2_AIRFLOW_PYTHON")
    python = Path(explicit) if explicit else REPO_ROOT / ".venv-airflow" / "bin" / "python"
    if not python.exists():
        pytest.skip(f"no Airflow venv at {python}: run `make airflow-venv`")
    return python


def airflow_env(home: Path, project: Path, datasets: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW", "PYTHONPATH", "VIRTUAL_ENV"))}
    env.update(AIRFLOW_HOME=str(home), AIRFLOW__CORE__LOAD_EXAMPLES="False",
               AIRFLOW__CORE__DAGS_FOLDER=str(DAG_FOLDER), SA2_PROJECT_DIR=str(project),
               SA2_AIRFLOW_DATASETS=datasets)
    return env


def parse_dags(tmp_path: Path, project: Path, datasets: str, script: str = _PARSE) -> dict:
    """What ``script`` (run by the Airflow venv's Python on the DAG folder) prints after
    ``DAGBAG ``, as JSON."""
    proc = subprocess.run([str(airflow_python()), "-c", script, str(DAG_FOLDER)],
                          env=airflow_env(tmp_path / "airflow-home", project, datasets),
                          capture_output=True, text=True, timeout=300, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("DAGBAG ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1].removeprefix("DAGBAG "))


def test_one_dag_per_dataset_with_the_schedule_from_config(tmp_path):
    project = tmp_path / "project"
    (project / "conf" / "base").mkdir(parents=True)
    (project / "conf" / "glas").mkdir(parents=True)
    (project / "conf" / "base" / "parameters_retraining.yml").write_text(
        (REPO_ROOT / "conf" / "base" / "parameters_retraining.yml").read_text())
    (project / "conf" / "glas" / "parameters.yml").write_text(
        yaml.safe_dump({"retraining": {"schedule": "30 2 * * 1"}}))
    (project / "dvc_datasets.yaml").write_text(yaml.safe_dump({"datasets": ["synthetic"]}))

    bag = parse_dags(tmp_path, project, "synthetic,glas")
    assert bag["errors"] == {}
    retraining = {d for d in bag["dags"] if d.startswith("sa2_retrain_")}  # + inference's
    assert retraining == {"sa2_retrain_synthetic", "sa2_retrain_glas"}
    daily, weekly = bag["dags"]["sa2_retrain_synthetic"], bag["dags"]["sa2_retrain_glas"]
    assert daily["expression"] == "0 0 * * *"       # "@daily", the default
    assert weekly["expression"] == "30 2 * * 1"     # conf/glas/parameters.yml
    for dag, name in ((daily, "synthetic"), (weekly, "glas")):
        assert dag["max_active_runs"] == 1 and dag["catchup"] is False
        assert dag["downstream"] == {"detect": ["retrain"], "retrain": ["report"], "report": []}
        assert dag["types"]["detect"] == "ShortCircuitOperator"
        assert f"sa2-pipeline\" retrain --env {name}" in dag["bash"]["retrain"]
        assert str(project / ".venv" / "bin" / "sa2-pipeline") in dag["bash"]["retrain"]
        assert 75 in dag["skip"]["retrain"]  # the lock is held: skipped, not failed


def test_datasets_default_to_dvc_datasets_yaml(tmp_path):
    bag = parse_dags(tmp_path, REPO_ROOT, "")
    listed = yaml.safe_load((REPO_ROOT / "dvc_datasets.yaml").read_text())["datasets"]
    assert bag["errors"] == {}
    assert sorted(d for d in bag["dags"] if d.startswith("sa2_retrain_")) == sorted(
        f"sa2_retrain_{d}" for d in listed)
