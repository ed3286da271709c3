"""The Kubeflow pipelines (deploy/kubeflow) run end to end with KFP's local subprocess
runner on a tiny project copy, through ``sa2-pipeline kubeflow run-local``:

* training: five tasks, one MLflow run holding the training and the evaluation results,
  a registered version made from that run;
* inference: 2 parts over 5 inputs, each segmented once, one run index of all 5; a part
  that fails is rerun without redoing the inputs that were finished;
* retraining (``-m slow``): with new slides it retrains and records a decision; with
  nothing new it stops after ``detect`` (no MLflow run, no record).

kfp lives in its own venv (``make kfp-venv`` -> ``.venv-kfp``, or ``$SA2_KFP_PYTHON``);
without it these tests skip.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
MODEL = "sa2net-synthetic"

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:mlflow")


def _kfp_python() -> Path:
    python = Path(os.environ.get("SA2_KFP_PYTHON") or REPO_ROOT / ".venv-kfp" / "bin" / "python")
    if not python.exists():
        pytest.skip(f"no kfp venv at {python}: run `make kfp-venv`")
    return python


def run_local(project, pipeline: str, *extra: str, check: bool = True):
    """``sa2-pipeline kubeflow run-local``; its output without colours."""
    env = dict(project.env, SA2_KFP_PYTHON=str(_kfp_python()))
    proc = project.run(str(VENV_BIN / "sa2-pipeline"), "kubeflow", "run-local", "--env",
                       "synthetic", "--pipeline", pipeline, *extra, env=env, check=check,
                       timeout=900)
    proc.stdout = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout)
    return proc


def client_of(project):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=project.tracking_uri, registry_uri=project.tracking_uri)


def runs_of(project) -> list:
    client = client_of(project)
    experiment = client.get_experiment_by_name("sa2-synthetic")
    return [] if experiment is None else client.search_runs([experiment.experiment_id])


@pytest.fixture(scope="module")
def kfp_project(make_project_copy):
    """A copy (tiny config in conf/base, as DVC and retraining need) after the KFP
    training pipeline ran once with the local runner."""
    _kfp_python()
    project = make_project_copy("kubeflow", tiny_config_in="base")
    project.training_output = run_local(project, "training").stdout
    return project


def test_training_pipeline_leaves_one_mlflow_run_with_training_and_evaluation(kfp_project):
    out = kfp_project.training_output
    for task in ("start-mlflow-run", "data-ingestion", "data-processing", "training",
                 "evaluation", "reporting"):
        assert f"Task '{task}' finished with status" in out, out[-4000:]
    runs = runs_of(kfp_project)
    assert len(runs) == 1, [r.info.run_name for r in runs]  # one model = one MLflow run
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["sa2.orchestrator"] == "kubeflow"
    metrics = run.data.metrics
    assert any(k.startswith("train") or "loss" in k for k in metrics), sorted(metrics)
    assert any("dice" in k.lower() and "test" in k.lower() for k in metrics), sorted(metrics)
    versions = client_of(kfp_project).search_model_versions(f"name = '{MODEL}'")
    assert [v.run_id for v in versions] == [run.info.run_id]
    assert kfp_project.data("08_reporting", "report.md").is_file()


def _write_inputs(folder: Path, n: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = []
    for i in range(n):
        name = f"tile-{i}.png"
        Image.fromarray(rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)).save(folder / name)
        names.append(name)
    return names


def _records(out_dir: Path) -> dict[str, tuple[int, int]]:
    """input name -> (inode, mtime) of its record: a redone input gets a new record file."""
    found = {}
    for path in (out_dir / "records").glob("*.json"):
        stat = path.stat()
        found[json.loads(path.read_text())["name"]] = (stat.st_ino, stat.st_mtime_ns)
    return found


def test_inference_fans_out_over_two_parts_and_a_failed_part_resumes(kfp_project):
    project = kfp_project
    slides = project.data("09_inference", "slides")
    names = _write_inputs(slides, 5)
    # One input is broken: its part fails after finishing its other inputs.
    good = (slides / "tile-3.png").read_bytes()
    (slides / "tile-3.png").write_bytes(b"not an image")

    failed = run_local(project, "inference", "--num-parts", "2", check=False)
    assert failed.returncode != 0, failed.stdout[-3000:]
    version = client_of(project).get_model_version_by_alias(MODEL, "champion").version
    out_dir = project.data("09_inference", "results", f"{MODEL}-v{version}")
    first = _records(out_dir)
    assert sorted(first) == sorted(set(names) - {"tile-3.png"}), sorted(first)
    assert not (out_dir / "run_index.json").exists()  # the merge never ran

    (slides / "tile-3.png").write_bytes(good)
    result = run_local(project, "inference", "--num-parts", "2")
    second = _records(out_dir)
    assert sorted(second) == names
    assert {n: second[n] for n in first} == first  # the finished inputs were not redone
    index = json.loads((out_dir / "run_index.json").read_text())
    assert sorted(index["inputs"]) == names  # each input once, with its outputs
    for entry in index["inputs"].values():
        assert all((out_dir / path).is_file() for path in entry["outputs"].values())
    assert [str(m["version"]) for m in index["models"]] == [str(version)]
    assert "Task 'segment-part'" in result.stdout

    # An input whose outputs are gone is not "done": the merge refuses, leaving the index.
    index_stat = (out_dir / "run_index.json").stat().st_mtime_ns
    (out_dir / index["inputs"]["tile-1.png"]["outputs"]["mask"]).unlink()
    merge = project.run(str(VENV_BIN / "sa2-pipeline"), "kubeflow", "merge", "--env",
                        "synthetic", "--out-dir", str(out_dir), check=False)
    assert merge.returncode == 1, merge.stdout[-2000:]
    assert "1 of 5 input(s) have no finished outputs (tile-1.png)" in merge.stdout
    assert (out_dir / "run_index.json").stat().st_mtime_ns == index_stat


@pytest.mark.slow  # a whole retrain (train, gate, DVC) and two more pipeline runs: -m slow
def test_retraining_retrains_on_new_slides_then_short_circuits(kfp_project, tmp_path):
    from test_retraining import add_synthetic_slides

    project = kfp_project
    raw = project.root / "data" / "01_raw" / "synthetic"
    add_synthetic_slides(raw, tmp_path)
    runs_before = len(runs_of(project))
    out = run_local(project, "retraining").stdout
    record_path = project.data("08_reporting", "retraining", "latest.json")
    record = json.loads(record_path.read_text())
    assert record["decision"] in ("promoted", "rejected")
    assert "Task 'retrain-report' finished" in out, out[-3000:]
    runs_after = len(runs_of(project))
    assert runs_after > runs_before

    again = run_local(project, "retraining").stdout
    assert "Task 'detect' finished" in again
    assert "Task 'retrain'" not in again  # the dsl.If skipped it
    assert len(runs_of(project)) == runs_after
    assert json.loads(record_path.read_text()) == record
    shutil.rmtree(tmp_path, ignore_errors=True)
