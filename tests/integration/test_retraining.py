"""`sa2-pipeline retrain` end to end on the embedded data: new synthetic slides are found,
verified, versioned with DVC, trained on, gated with statistics and recorded; a second
call is a no-op that opens no MLflow run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

VENV_BIN = Path(sys.executable).parent

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
    report = project.data("08_reporting", "report.md").read_text()
    section = project.data("08_reporting", "retraining", "latest.md").read_text().strip()
    assert section.startswith("## Retraining") and section in report, report[-2000:]
    assert "Retraining</h2><ul>" in project.data("08_reporting", "report.html").read_text()
    # DVC knows what the retrain rebuilt (issue 24, README 3) ...
    status = project.dvc("status").stdout
    assert "up to date" in status, status
    # ... and a rebuilt report keeps the section, registry text without a repeated reason
    project.dvc("repro", "--force", "--single-item", "reporting@synthetic")
    rebuilt = project.data("08_reporting", "report.md").read_text()
    assert section in rebuilt, rebuilt[-2000:]
    assert "up to date" in project.dvc("status").stdout

    runs_before = len(client.search_runs([run.info.experiment_id]))
    again = retrain(project).stdout
    assert "nothing new" in again and "no MLflow run" in again
    assert len(client.search_runs([run.info.experiment_id])) == runs_before
    assert len(client.search_model_versions("name = 'sa2net-synthetic'")) == len(
        versions_before) + 1
    # The same through Kedro: `kedro run --pipelines retraining` runs the same sequence.
    via_kedro = project.kedro("run", "--pipelines", "retraining", "--env", "synthetic").stdout
    assert "nothing new" in via_kedro
    assert len(client.search_runs([run.info.experiment_id])) == runs_before


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


class Background:
    """A retrain in its own process group; its output is drained into ``lines``."""

    def __init__(self, project, *args: str) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "sa2-pipeline"), "retrain", "--env", "synthetic", *args],
            cwd=project.root, env=project.env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, condition, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.proc.poll() is not None:
                pytest.fail(f"retrain ended ({self.proc.returncode}) before the kill point\n"
                            f"{self.output()[-4000:]}")
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"kill point not reached\n{self.output()[-4000:]}")
            time.sleep(0.1)

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)  # the retrain and its kedro run
        self.proc.wait(timeout=60)
        self._reader.join(timeout=10)


def _state(project):
    client = mlflow_client(project)
    versions = sorted(int(v.version) for v in
                      client.search_model_versions("name = 'sa2net-synthetic'"))
    champion = client.get_model_version_by_alias("sa2net-synthetic", "champion").version
    return versions, str(champion)


def test_concurrent_retrains_and_kills_never_move_the_champion(trained_project, tmp_path):
    project = trained_project
    raw = project.root / "data" / "01_raw" / "synthetic"
    versions, champion = _state(project)
    add_synthetic_slides(raw, tmp_path, n=2, seed=23)
    checkpoints = project.data("06_models", "checkpoints")
    started = time.time()

    # Two retrains started together: exactly one runs, the other exits 75 at once.
    first, second = Background(project), Background(project)
    codes = {}
    deadline = time.monotonic() + 120
    while not codes and time.monotonic() < deadline:
        codes = {name: bg.proc.poll() for name, bg in (("first", first), ("second", second))
                 if bg.proc.poll() is not None}
        time.sleep(0.1)
    assert list(codes.values()) == [75], codes
    loser, runner = (first, second) if "first" in codes else (second, first)
    loser._reader.join(timeout=10)
    assert f"pid {runner.proc.pid}" in loser.output() and "started" in loser.output()

    # SIGKILL during training (a new epoch checkpoint has been written)
    runner.wait_for(lambda: any(p.stat().st_mtime > started
                                for p in checkpoints.rglob("last.pt")))
    runner.kill()
    assert _state(project) == (versions, champion)

    # SIGKILL during evaluation
    rerun = Background(project)
    rerun.wait_for(lambda: "Running node: evaluate_models" in rerun.output())
    rerun.kill()
    assert _state(project) == (versions, champion)
    assert "resuming the retrain interrupted" in rerun.output()

    # The rerun finishes the job: one new version, the gate decided, a record written.
    done = retrain(project).stdout
    assert "2 new, 0 changed" in done, done[-3000:]
    new_versions, new_champion = _state(project)
    assert new_versions == [*versions, versions[-1] + 1]
    record = json.loads(project.data("08_reporting", "retraining", "latest.json").read_text())
    assert new_champion == (str(new_versions[-1]) if record["decision"] == "promoted"
                            else champion)
    assert "nothing new" in retrain(project).stdout
