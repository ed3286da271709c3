"""`sa2-pipeline retrain` end to end on the embedded data: new synthetic slides are found,
verified, versioned with DVC, trained on, gated with statistics and recorded; a second
call is a no-op that opens no MLflow run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from .conftest import VENV_BIN

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:mlflow")

TRAIN_IMAGES = Path("MoNuSeg 2018 Training Data") / "Tissue Images"
TRAIN_XML = Path("MoNuSeg 2018 Training Data") / "Annotations"


def add_synthetic_slides(raw: Path, tmp: Path, n: int = 2, seed: int = 7) -> list[str]:
    """Generate ``n`` new annotated synthetic slides and drop them into the training folder."""
    from sa2_pipeline.datasets.synthetic import ensure_synthetic_monuseg

    fresh = tmp / f"new-slides-{seed}"
    ensure_synthetic_monuseg(fresh, n_train=n, n_test=0, image_size=64, seed=seed)
    ids = []
    for image in sorted((fresh / TRAIN_IMAGES).glob("*.tif")):
        new_id = image.stem.replace("SYN-TRAIN", f"SYN-NEW{seed}")
        shutil.copy(image, raw / TRAIN_IMAGES / f"{new_id}.tif")
        shutil.copy(fresh / TRAIN_XML / f"{image.stem}.xml", raw / TRAIN_XML / f"{new_id}.xml")
        ids.append(new_id)
    return ids


def retrain(project, *args: str, check: bool = True):
    return project.run(str(VENV_BIN / "sa2-pipeline"), "retrain", "--env", "synthetic", *args,
                       check=check)


def mlflow_client(project):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=project.tracking_uri, registry_uri=project.tracking_uri)


@pytest.fixture(scope="module")
def trained_project(make_project_copy):
    """A copy with the tiny config in conf/base, after one `kedro run --env synthetic`."""
    project = make_project_copy("retraining", tiny_config_in="base")
    project.git_commit("tiny config")
    project.kedro("run", "--env", "synthetic")
    return project


def test_new_slides_retrain_gate_record_then_no_op(trained_project, tmp_path):
    project = trained_project
    raw = project.root / "data" / "01_raw" / "synthetic"
    client = mlflow_client(project)
    versions_before = client.search_model_versions("name = 'sa2net-synthetic'")

    new_ids = add_synthetic_slides(raw, tmp_path)
    out = retrain(project).stdout
    assert "2 new, 0 changed, 0 removed image(s)" in out, out[-3000:]

    record = json.loads((project.data("08_reporting", "retraining", "latest.json")).read_text())
    assert record["changes"]["new"] == sorted(new_ids)
    assert record["decision"] in ("promoted", "rejected")
    version = record["registration"]["version"]
    assert int(version) > max(int(v.version) for v in versions_before)
    tags = client.get_model_version("sa2net-synthetic", version).tags
    assert tags["sa2.gate.decision"] == record["decision"]
    for key in ("n", "delta", "delta_low", "delta_high", "lower_bound", "wilcoxon_p"):
        assert key.replace("_", "") and f"sa2.gate.{key}" in tags, tags
    assert int(tags["sa2.gate.n"]) == record["n_test_images"] == 2
    assert float(tags["sa2.gate.delta_low"]) <= float(tags["sa2.gate.delta"]) <= float(
        tags["sa2.gate.delta_high"])
    # the data version: the raw folder's hash in dvc.lock, on the version and the run
    lock = yaml.safe_load((project.root / "dvc.lock").read_text())
    outs = {o["path"]: o["md5"] for o in lock["stages"]["data_ingestion@synthetic"]["outs"]}
    assert tags["sa2.data_version"] == f"dvc-{outs['data/01_raw/synthetic']}"
    run = client.get_run(record["registration"]["run_id"])
    assert run.data.params["registry.data_version"] == tags["sa2.data_version"]
    assert record["data"]["pushed"] is True  # the project's default remote
    assert "## Retraining" in project.data("08_reporting", "report.md").read_text()

    runs_before = len(client.search_runs([run.info.experiment_id]))
    again = retrain(project).stdout
    assert "nothing new" in again and "no MLflow run" in again
    assert len(client.search_runs([run.info.experiment_id])) == runs_before
    assert len(client.search_model_versions("name = 'sa2net-synthetic'")) == len(
        versions_before) + 1


def test_bad_new_slide_is_refused_with_nothing_written(trained_project, tmp_path):
    project = trained_project
    raw = project.root / "data" / "01_raw" / "synthetic"
    manifest = project.data("02_intermediate", "manifest.csv")
    before = manifest.read_bytes()
    lock_before = (project.root / "dvc.lock").read_text()
    (raw / TRAIN_IMAGES / "SYN-BAD-000.tif").write_bytes(b"not a tiff")
    try:
        proc = retrain(project, check=False)
        assert proc.returncode == 3, proc.stdout[-3000:]
        assert "SYN-BAD-000" in proc.stdout and "nothing was written" in proc.stdout
        assert manifest.read_bytes() == before
        assert (project.root / "dvc.lock").read_text() == lock_before
    finally:
        (raw / TRAIN_IMAGES / "SYN-BAD-000.tif").unlink()


def test_new_test_slide_needs_the_flag(trained_project, tmp_path):
    project = trained_project
    raw = project.root / "data" / "01_raw" / "synthetic"
    fresh = tmp_path / "t"
    from sa2_pipeline.datasets.synthetic import ensure_synthetic_monuseg

    ensure_synthetic_monuseg(fresh, n_train=1, n_test=1, image_size=64, seed=11)
    added = []
    for f in sorted((fresh / "MoNuSegTestData").iterdir()):
        target = raw / "MoNuSegTestData" / f.name.replace("SYN-TEST", "SYN-NEWTEST")
        shutil.copy(f, target)
        added.append(target)
    try:
        proc = retrain(project, check=False)
        assert proc.returncode == 4, proc.stdout[-3000:]
        assert "frozen test set" in proc.stdout and "SYN-NEWTEST-000" in proc.stdout
    finally:
        for f in added:
            f.unlink()
