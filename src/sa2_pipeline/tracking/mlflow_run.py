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


# --------------------------------------------------------------- runs whose process died
#: Tags naming the process that runs an MLflow run (set at the start of every `kedro run`).
PID_TAG, HOST_TAG = "sa2.pid", "sa2.host"


def mark_process(run_id: str) -> None:
    """Tag ``run_id`` with this process's pid and host: what :func:`end_orphaned_runs`
    checks when the process is later killed without ending the run."""
    import socket

    from mlflow import MlflowClient

    client = MlflowClient()
    client.set_tag(run_id, PID_TAG, str(os.getpid()))
    client.set_tag(run_id, HOST_TAG, socket.gethostname())


def _process_alive_since(pid: int, start_ms: int) -> bool:
    """Whether process ``pid`` exists and is older than ``start_ms`` (epoch ms).

    A pid that exists but started after the run did is another process that reused the
    number (Linux: from ``/proc``; elsewhere any live pid counts as the run's).
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    try:
        from pathlib import Path

        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))
        started = boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return True
    return started * 1000 <= start_ms + 1000


def end_orphaned_runs(experiment_id: str, current_run_id: str | None) -> list[str]:
    """End ``KILLED`` the runs of the experiment left ``RUNNING`` by a killed process.

    A run whose process was SIGKILLed (or lost its machine) never ends: MLflow shows it
    ``RUNNING`` for ever. A run this project started records its pid and host
    (:func:`mark_process`); a ``RUNNING`` run of this host whose process no longer exists
    is ended ``KILLED`` and tagged ``sa2.ended_by`` with the run that found it. Runs of
    other hosts are left alone (their processes cannot be checked from here).

    Returns:
        The ids of the runs ended.
    """
    import socket

    from mlflow import MlflowClient

    client = MlflowClient()
    host = socket.gethostname().replace("'", "")
    ended = []
    for run in client.search_runs(
            [experiment_id], max_results=200,
            filter_string=f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{host}'"):
        run_id = run.info.run_id
        pid = run.data.tags.get(PID_TAG, "")
        if run_id == current_run_id or not pid.isdigit():
            continue
        if _process_alive_since(int(pid), run.info.start_time or 0):
            continue
        client.set_tag(run_id, "sa2.ended_by",
                       f"run {current_run_id}: process {pid} on {host} no longer exists")
        client.set_terminated(run_id, "KILLED")
        ended.append(run_id)
    return ended
