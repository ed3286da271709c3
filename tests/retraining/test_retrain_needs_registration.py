"""A retrain exists to gate a challenger: with ``registry.register`` false it refuses
before anything runs (no lock, no detection record, no DVC, no training), exits 1 and
leaves the new slides new; ``detect`` alone is still allowed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sa2_pipeline.cli import main
from sa2_pipeline.retraining import orchestrate

TINY_RAW = {"data_ingestion": {"synthetic": {"n_train": 2, "n_test": 1, "image_size": 64}}}


@pytest.fixture
def project(offline_project):
    """A checkout's conf/ in a temporary folder; the synthetic env makes tiny slides."""
    return offline_project(n_train=2, n_test=1, message="a refused retrain ran")


def _detect(root: Path, capsys, *params: str) -> dict:
    code = main(["detect", "--env", "synthetic", "--project-dir", str(root), *params])
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert code == 0, line
    return json.loads(line)


def _nothing_consumed(root: Path) -> None:
    state = root / "data" / "08_reporting" / "synthetic" / "retraining"
    assert not (state / "pending.json").exists() and not (state / "latest.json").exists()
    assert not (root / "data" / "02_intermediate" / "synthetic" / "raw_inventory.json").exists()


def test_retrain_with_register_false_in_params_refuses_and_keeps_the_slides_new(
        project, capsys):
    assert _detect(project, capsys)["retrain"]

    code = main(["retrain", "--env", "synthetic", "--project-dir", str(project),
                 "--params", "registry.register=false"])
    out = capsys.readouterr().out
    assert code == orchestrate.EXIT_BAD_SETTING == 1, out
    assert "refused" in out and "registry.register is false" in out
    assert "rejected: None" not in out
    _nothing_consumed(project)
    assert _detect(project, capsys)["retrain"]  # the next detect still reports them


def test_retrain_with_register_false_in_the_environment_refuses(project, capsys):
    params = project / "conf" / "synthetic" / "parameters.yml"
    params.write_text(json.dumps({**TINY_RAW, "registry": {"register": False}}))
    # detect-only changes nothing and is allowed
    assert _detect(project, capsys)["retrain"]

    code = main(["retrain", "--env", "synthetic", "--project-dir", str(project)])
    out = capsys.readouterr().out
    assert code == 1 and "registry.register is false" in out, out
    _nothing_consumed(project)
    # an explicit --params registry.register=true overrides the environment
    from sa2_pipeline.pipelines.retraining.request import build_request

    assert build_request(project, "synthetic", params="registry.register=true").register
    assert not build_request(project, "synthetic").register


def test_a_training_run_that_registered_nothing_is_a_failure_not_a_rejection(
        project, capsys, monkeypatch):
    """The backstop: should the run register nothing all the same, the retrain fails and
    stays pending (the next call finishes it) instead of recording "rejected: None"."""
    reports = project / "data" / "08_reporting" / "synthetic"

    def fake_kedro_run(command, cwd):
        reports.mkdir(parents=True, exist_ok=True)
        (reports / "model_registration.json").write_text(json.dumps(
            {"registered": False, "reason": "no active MLflow run"}))
        (reports / "test_summary.json").write_text(json.dumps({"test_dice": 0.5}))

    def fake_versioning(*args):  # ingestion writes the new manifest
        manifest = project / "data" / "02_intermediate" / "synthetic" / "manifest.csv"
        manifest.parent.mkdir(parents=True, exist_ok=True)
        manifest.write_text("id,split,image_sha256,mask_sha256\n")
        return {"data_version": "dvc-x", "pushed": False}

    monkeypatch.setattr(orchestrate, "version_raw_data", fake_versioning)
    monkeypatch.setattr(orchestrate, "run_command", fake_kedro_run)
    code = main(["retrain", "--env", "synthetic", "--project-dir", str(project)])
    out = capsys.readouterr().out
    assert code == orchestrate.EXIT_FAILED and "registered no challenger" in out, out
    assert "no active MLflow run" in out and "rejected" not in out
    assert (reports / "retraining" / "pending.json").exists()
    assert not (reports / "retraining" / "latest.json").exists()
    assert _detect(project, capsys)["retrain"]  # still to do
