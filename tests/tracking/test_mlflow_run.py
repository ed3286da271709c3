"""The run hand-over from the launching process to the torchrun workers."""

import pytest

from sa2_pipeline.tracking.mlflow_run import RUN_ID_ENV, active_run_id, active_run_info, hand_over


@pytest.fixture
def store(tmp_path, monkeypatch):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("hand-over")  # not another test's experiment id
    monkeypatch.delenv(RUN_ID_ENV, raising=False)
    try:
        yield uri
    finally:
        while mlflow.active_run() is not None:
            mlflow.end_run()
        mlflow.set_tracking_uri(None)


def test_hand_over_passes_the_active_run_and_never_mlflow_run_id(store):
    import mlflow

    env = {"MLFLOW_RUN_ID": "stale", RUN_ID_ENV: "older"}
    hand_over(env)  # no active run: nothing to hand over
    assert "MLFLOW_RUN_ID" not in env and RUN_ID_ENV not in env
    assert env["MLFLOW_TRACKING_URI"] == store
    with mlflow.start_run() as run:
        env = {"MLFLOW_RUN_ID": run.info.run_id}
        hand_over(env)
        assert active_run_id() == run.info.run_id
        assert active_run_info()["experiment_id"] == run.info.experiment_id
    assert env == {"MLFLOW_TRACKING_URI": store, RUN_ID_ENV: run.info.run_id}


def test_only_rank_zero_of_a_worker_sees_the_handed_over_run(store, monkeypatch):
    assert active_run_id() is None
    monkeypatch.setenv(RUN_ID_ENV, "abc")
    monkeypatch.setenv("RANK", "0")
    assert active_run_id() == "abc"
    monkeypatch.setenv("RANK", "1")
    assert active_run_id() is None
    assert active_run_info() == {"run_id": None, "experiment_id": None}
