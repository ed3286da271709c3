"""A run resumed in a new MLflow run continues, and links to, the run that was killed."""

from __future__ import annotations

import pytest
from test_trainer import _CrashAfter, _fit, _train_cfg

from sa2_pipeline.engine.checkpoint import load_checkpoint
from sa2_pipeline.tracking.training_callbacks import training_callbacks


@pytest.fixture
def mlflow_client(tmp_path, monkeypatch):
    import mlflow
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    try:
        yield MlflowClient()
    finally:
        while mlflow.active_run() is not None:
            mlflow.end_run()
        mlflow.set_tracking_uri(None)


def test_resume_in_a_new_run_links_both_runs_and_completes_the_curves(tmp_path, mlflow_client):
    import mlflow

    experiment = mlflow_client.create_experiment("resume")
    cfg = _train_cfg(tmp_path, epochs=4)

    # Run A: training is killed after epoch 2 was checkpointed.
    run_a = mlflow.start_run(experiment_id=experiment).info.run_id
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path, cfg, callbacks=[*training_callbacks(), _CrashAfter(2)])
    (checkpoint,) = (tmp_path / "ckpt").rglob("last.pt")
    assert load_checkpoint(checkpoint)["meta"]["mlflow_run_id"] == run_a
    # A killed process never ends its run: it stays RUNNING in the store.
    mlflow.end_run()
    mlflow_client.update_run(run_a, status="RUNNING")

    # Run B: `kedro run` again, in a new MLflow run.
    with mlflow.start_run(experiment_id=experiment) as run:
        run_b = run.info.run_id
        bundle, history = _fit(tmp_path, cfg, callbacks=training_callbacks())
    assert bundle["metadata"]["resumed_from_epoch"] == 2
    assert len(history) == 4

    a, b = mlflow_client.get_run(run_a), mlflow_client.get_run(run_b)
    assert b.data.tags["sa2.resumed_from_run_id"] == run_a
    assert b.data.tags["sa2.resumed_from_epoch"] == "2"
    assert a.data.tags["sa2.continued_in_run_id"] == run_b
    assert a.info.status == "KILLED"
    assert b.info.status == "FINISHED"

    # Run B's curves are complete (epochs 1-2 recovered, 3-4 trained), one value each.
    for key in ("val_dice", "train_loss", "samples"):
        steps = [m.step for m in mlflow_client.get_metric_history(run_b, key)]
        assert sorted(steps) == [1, 2, 3, 4], key
    dice = {m.step: m.value for m in mlflow_client.get_metric_history(run_b, "val_dice")}
    assert dice == pytest.approx({r["epoch"]: r["val_dice"] for r in history})
    assert sorted(m.step for m in mlflow_client.get_metric_history(run_a, "val_dice")) == [1, 2]
    # Later checkpoints record the run that wrote them.
    assert load_checkpoint(checkpoint)["meta"]["mlflow_run_id"] == run_b


def test_resume_in_the_same_run_adds_no_links_and_no_duplicates(tmp_path, mlflow_client):
    import mlflow

    experiment = mlflow_client.create_experiment("same-run")
    cfg = _train_cfg(tmp_path, epochs=3)
    with mlflow.start_run(experiment_id=experiment) as run:
        with pytest.raises(KeyboardInterrupt):
            _fit(tmp_path, cfg, callbacks=[*training_callbacks(), _CrashAfter(1)])
        # e.g. a failed fold retried inside the same run
        _fit(tmp_path, cfg, callbacks=training_callbacks())
    tags = mlflow_client.get_run(run.info.run_id).data.tags
    # Resume links only (the precision actually used is tagged too, since issue 14).
    assert not any(k.startswith(("sa2.resumed_from", "sa2.continued_in")) for k in tags), tags
    steps = [m.step for m in mlflow_client.get_metric_history(run.info.run_id, "val_dice")]
    assert sorted(steps) == [1, 2, 3]
