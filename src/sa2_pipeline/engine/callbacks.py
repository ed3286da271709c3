"""Training callbacks: epoch logging, MLflow metrics while training runs, run continuation."""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sa2_pipeline.engine.trainer import Trainer

logger = logging.getLogger(__name__)

# Same value as sa2_pipeline.engine.distributed.WORKER_RUN_ID_ENV (kept import-free here).
_WORKER_RUN_ID_ENV = "SA2_DDP_MLFLOW_RUN_ID"


class Callback:
    """Hooks into the trainer's lifecycle; every method is optional."""

    def on_fit_start(self, trainer: Trainer) -> None:
        """Called once before the first (or first resumed) epoch."""

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        """Called after validation and checkpointing of every epoch."""

    def on_fit_end(self, trainer: Trainer) -> None:
        """Called once when training stops (completed or stopped early)."""


class EpochLogger(Callback):
    """One log line per epoch."""

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        logger.info(
            "epoch %d/%d  loss %.4f  val_dice %.4f  lr %.2e  %.1fs%s",
            record["epoch"],
            trainer.epochs,
            record["train_loss"],
            record["val_dice"],
            record["lr"],
            record["epoch_seconds"],
            "  *best*" if record["is_best"] else "",
        )


def current_mlflow_run_id() -> str | None:
    """The MLflow run training logs into, or ``None``.

    That is the active run of this process; in a ``torchrun`` worker, rank 0's run handed
    over by the launcher (:data:`sa2_pipeline.engine.distributed.WORKER_RUN_ID_ENV`).
    MLflow is never imported here: if nothing imported it there can be no active run.
    """
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None:
        run = mlflow.active_run()
        if run is not None:
            return run.info.run_id
    return os.environ.get(_WORKER_RUN_ID_ENV) or None


def _record_metrics(record: dict[str, Any], prefix: str) -> dict[str, float]:
    return {
        f"{prefix}{k}": float(v)
        for k, v in record.items()
        if k not in ("epoch", "is_best") and isinstance(v, int | float)
    }


def _log_metrics(run_id: str, metrics: dict[str, float], step: int) -> None:
    """Log into ``run_id``: the fluent API for the active run, a client otherwise."""
    mlflow = sys.modules.get("mlflow")
    active = mlflow.active_run() if mlflow is not None else None
    if active is not None and active.info.run_id == run_id:
        mlflow.log_metrics(metrics, step=step)
        return
    import time

    from mlflow import MlflowClient
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(k, v, now, step) for k, v in metrics.items()]
    client = MlflowClient()
    for start in range(0, len(batch), 1000):  # MLflow's per-request limit
        client.log_batch(run_id, metrics=batch[start : start + 1000])


class MlflowMetricsLogger(Callback):
    """Logs every epoch's metrics to the active MLflow run as they happen.

    Does nothing when no MLflow run is active (plain library use, tests), so the engine
    never depends on MLflow. ``prefix`` separates folds (``fold0/val_dice``). In a
    data-parallel job only rank 0 runs callbacks and logs into the launcher's run.
    """

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        run_id = current_mlflow_run_id()
        if run_id is None:
            return
        _log_metrics(run_id, _record_metrics(record, self.prefix), int(record["epoch"]))


class MlflowRunContinuation(Callback):
    """Links the MLflow run that resumes a checkpoint to the run that wrote it.

    Every checkpoint records the MLflow run active when it was written
    (``meta["mlflow_run_id"]``). When training resumes such a checkpoint inside another
    run (``kedro run`` was killed and started again), this callback, at fit start:

    * tags the current run ``sa2.resumed_from_run_id`` / ``sa2.resumed_from_epoch``
      (and ``sa2.<prefix>resumed_from_epoch`` when a metric prefix separates folds);
    * tags the old run ``sa2.continued_in_run_id`` and, if it is still ``RUNNING`` (its
      process was killed before it could end it), marks it ``KILLED``;
    * logs the recovered history's metrics into the current run, so its curves start at
      epoch 1.

    Problems with the old run (deleted, in another store) are logged, never raised.
    """

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix

    def on_fit_start(self, trainer: Trainer) -> None:
        if not trainer.resumed_from_epoch:
            return
        old = (trainer.resumed_meta or {}).get("mlflow_run_id")
        new = current_mlflow_run_id()
        if not old or not new or old == new:
            return
        from mlflow import MlflowClient

        client = MlflowClient()
        epoch = str(trainer.resumed_from_epoch)
        client.set_tag(new, "sa2.resumed_from_run_id", old)
        client.set_tag(new, "sa2.resumed_from_epoch", epoch)
        if self.prefix:
            client.set_tag(new, f"sa2.{self.prefix}resumed_from_epoch", epoch)
        try:
            client.set_tag(old, "sa2.continued_in_run_id", new)
            if client.get_run(old).info.status == "RUNNING":
                client.set_terminated(old, "KILLED")
        except Exception as err:  # noqa: BLE001 - the old run is only informative
            logger.warning("could not update MLflow run %s that wrote the checkpoint: %s",
                           old, err)
        for record in trainer.history:
            _log_metrics(new, _record_metrics(record, self.prefix), int(record["epoch"]))
        logger.info("MLflow run %s continues run %s from epoch %s (%d epochs re-logged)",
                    new, old, epoch, len(trainer.history))
