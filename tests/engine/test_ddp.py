"""Data-parallel training: 2 CPU processes (gloo) through the real ``torchrun`` launcher.

``fit_segmentation_model`` with ``training.distributed.nproc_per_node: 2`` starts
``python -m torch.distributed.run ... -m sa2_pipeline.engine.ddp_worker`` and returns the
result of its rank 0. These tests do not skip: if torchrun cannot start here, they fail.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
from test_trainer import MODEL, _CrashAfter, _fit, _strip_times, _train_cfg

from sa2_pipeline.engine.checkpoint import load_checkpoint
from sa2_pipeline.models.bundle import model_from_bundle
from sa2_pipeline.tracking.training_callbacks import training_callbacks

EPOCHS = 3
_TESTS_DIR = Path(__file__).resolve().parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ddp_cfg(root: Path):
    return _train_cfg(root, epochs=EPOCHS, device="cpu",
                      distributed={"nproc_per_node": 2, "master_port": _free_port()})


def _files(root: Path) -> list[str]:
    """Files left under ``root``, without the run folders' lock files (``.<run>.lock``,
    kept by design: see ``engine.fit._run_lock``)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and not p.name.endswith(".lock"))


@pytest.fixture(scope="module")
def mlflow_client(tmp_path_factory):
    import mlflow
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    old_env = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    try:
        yield MlflowClient()
    finally:
        while mlflow.active_run() is not None:
            mlflow.end_run()
        mlflow.set_tracking_uri(None)
        if old_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old_env


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory, mlflow_client):
    """One uninterrupted 2-process run inside an active MLflow run."""
    import mlflow

    root = tmp_path_factory.mktemp("ddp")
    experiment = mlflow_client.create_experiment("ddp")
    with mlflow.start_run(experiment_id=experiment) as run:
        bundle, history = _fit(root, _ddp_cfg(root), callbacks=training_callbacks())
        active_after = mlflow.active_run()
        status_after = mlflow_client.get_run(run.info.run_id).info.status
    return {
        "root": root, "experiment": experiment, "run_id": run.info.run_id,
        "bundle": bundle, "history": history,
        "active_after": active_after.info.run_id if active_after else None,
        "status_after": status_after,
    }


def test_two_processes_train_and_log_into_the_callers_run(ddp_run, mlflow_client, tmp_path):
    bundle, history = ddp_run["bundle"], ddp_run["history"]
    run_id = ddp_run["run_id"]

    # The result comes back like a single-process call's, and loads into the model.
    assert len(history) == EPOCHS
    assert bundle["metadata"]["world_size"] == 2
    assert bundle["metadata"]["epochs_run"] == EPOCHS
    model_from_bundle(bundle)  # strict load_state_dict inside
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in bundle["state_dict"])

    # Samples per epoch over both ranks = the single-process count (4 = 2 ranks x 2).
    _, single = _fit(tmp_path, _train_cfg(tmp_path, epochs=EPOCHS, device="cpu"))
    assert [r["samples"] for r in history] == [r["samples"] for r in single] == [4] * EPOCHS

    # The caller's run is still the active one, still running.
    assert ddp_run["active_after"] == run_id
    assert ddp_run["status_after"] == "RUNNING"

    # Exactly one MLflow run, holding one value per epoch (rank 0 only logs).
    runs = mlflow_client.search_runs([ddp_run["experiment"]])
    assert [r.info.run_id for r in runs] == [run_id]
    for key in ("val_dice", "train_loss", "samples"):
        steps = [m.step for m in mlflow_client.get_metric_history(run_id, key)]
        assert sorted(steps) == list(range(1, EPOCHS + 1)), key
    losses = {m.step: m.value for m in mlflow_client.get_metric_history(run_id, "train_loss")}
    assert losses == pytest.approx({r["epoch"]: r["train_loss"] for r in history})

    # One checkpoint, written by rank 0; no spec, result or log left behind.
    ckpt_root = ddp_run["root"] / "ckpt"
    files = _files(ckpt_root)
    assert len(files) == 1 and files[0].endswith("/last.pt"), files
    meta = load_checkpoint(ckpt_root / files[0])["meta"]
    assert meta["mlflow_run_id"] == run_id


def test_failed_ddp_run_raises_keeps_its_checkpoint_and_resumes_exactly(
    ddp_run, tmp_path, monkeypatch
):
    # The crash callback travels to the workers by reference: let them import it.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(_TESTS_DIR), os.environ.get("PYTHONPATH")) if p
    ))
    with pytest.raises(RuntimeError, match=r"torchrun exited with code \d+.*torchrun-node0\.log"):
        _fit(tmp_path, _ddp_cfg(tmp_path), callbacks=[_CrashAfter(1)])
    checkpoints = list((tmp_path / "ckpt").rglob("last.pt"))
    assert len(checkpoints) == 1
    assert load_checkpoint(checkpoints[0])["epoch"] == 1
    assert len(list((tmp_path / "ckpt").rglob("torchrun-node0.log"))) == 1  # kept

    bundle, history = _fit(tmp_path, _ddp_cfg(tmp_path))  # a new port, same run

    assert bundle["metadata"]["resumed_from_epoch"] == 1
    assert _strip_times(history) == _strip_times(ddp_run["history"])
    for key, value in ddp_run["bundle"]["state_dict"].items():
        assert torch.equal(value, bundle["state_dict"][key]), key
    files = _files(tmp_path / "ckpt")
    assert len(files) == 1 and files[0].endswith("/last.pt"), files


def test_distributed_settings_are_validated_and_kept_out_of_the_fingerprint(tmp_path):
    from test_trainer import _toy_data

    from sa2_pipeline.config import ConfigError
    from sa2_pipeline.engine.fingerprint import run_fingerprint

    with pytest.raises(ConfigError, match="node_rank"):
        _train_cfg(tmp_path, distributed={"nnodes": 2, "node_rank": 2})
    with pytest.raises(ConfigError, match="nproc_per_node"):
        _train_cfg(tmp_path, distributed={"nproc_per_node": 0})
    with pytest.raises(ConfigError, match="backend"):
        _train_cfg(tmp_path, distributed={"backend": "mpi"})
    images, masks = _toy_data(2)
    # Resuming with another world size is allowed (documented: correct, not bit-identical).
    single = _train_cfg(tmp_path, epochs=EPOCHS, device="cpu")
    assert run_fingerprint(MODEL, single, images, masks, images) == (
        run_fingerprint(MODEL, _ddp_cfg(tmp_path), images, masks, images)
    )
