"""The MLflow run that training and evaluation log into, and its hand-over to workers.

In an ordinary process that is the active MLflow run (kedro-mlflow opens one per
``kedro run``). A ``torchrun`` worker has no active run: the launching process hands the
run id over in :data:`RUN_ID_ENV` (see :func:`hand_over`), and rank 0 logs into it with an
``MlflowClient``. The other ranks never see a run, so only rank 0 logs.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import MutableMapping
from typing import Any

#: Environment variable carrying the MLflow run id from the launcher to its workers.
#: Never ``MLFLOW_RUN_ID``: ``mlflow.start_run`` would pick that up and end the run at exit.
RUN_ID_ENV = "SA2_DDP_MLFLOW_RUN_ID"

# MLflow's per-request limit on logged metrics.
_BATCH_LIMIT = 1000


def _mlflow() -> Any:
    """The ``mlflow`` module if this process imported it, else ``None``.

    Not importing it here is deliberate: if nothing imported MLflow, no run can be active,
    and plain library use (tests, notebooks) never pays for the import.
    """
    return sys.modules.get("mlflow")


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def active_run_id() -> str | None:
    """The id of the MLflow run to log into, or ``None`` when there is none.

    The active run of this process; in a ``torchrun`` worker of rank 0, the launcher's
    run handed over in :data:`RUN_ID_ENV`; ``None`` on every other rank.
    """
    mlflow = _mlflow()
    run = mlflow.active_run() if mlflow is not None else None
    if run is not None:
        return run.info.run_id
    if _rank() != 0:
        return None
    return os.environ.get(RUN_ID_ENV) or None


def active_run_info() -> dict[str, Any]:
    """``{"run_id", "experiment_id"}`` of this process's active run (``None`` values if none)."""
    mlflow = _mlflow()
    run = mlflow.active_run() if mlflow is not None else None
    if run is None:
        return {"run_id": None, "experiment_id": None}
    return {"run_id": run.info.run_id, "experiment_id": run.info.experiment_id}


def hand_over(env: MutableMapping[str, str]) -> None:
    """Prepare ``env``, the environment of ``torchrun`` workers, to log into this run.

    Removes ``MLFLOW_RUN_ID`` (a worker's ``mlflow.start_run`` would honour it and its
    exit handler would then end the parent's run), passes the tracking URI (it may have
    been set in code, not in the environment) and the active run's id.
    """
    env.pop("MLFLOW_RUN_ID", None)
    env.pop(RUN_ID_ENV, None)
    mlflow = _mlflow()
    if mlflow is None:
        return
    env["MLFLOW_TRACKING_URI"] = str(mlflow.get_tracking_uri())
    run = mlflow.active_run()
    if run is not None:
        env[RUN_ID_ENV] = run.info.run_id


def log_metrics(run_id: str, metrics: dict[str, float], step: int) -> None:
    """Log ``metrics`` at ``step`` into ``run_id``.

    The fluent API when ``run_id`` is this process's active run, a client otherwise (a
    worker logging into the launcher's run, or history re-logged into a new run).
    """
    mlflow = _mlflow()
    active = mlflow.active_run() if mlflow is not None else None
    if active is not None and active.info.run_id == run_id:
        mlflow.log_metrics(metrics, step=step)
        return
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(k, v, now, step) for k, v in metrics.items()]
    client = MlflowClient()
    for start in range(0, len(batch), _BATCH_LIMIT):
        client.log_batch(run_id, metrics=batch[start : start + _BATCH_LIMIT])
