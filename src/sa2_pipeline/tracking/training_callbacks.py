"""Training callbacks that log to MLflow: metrics while training runs, run continuation.

The training pipeline passes :func:`training_callbacks` to the engine; the engine runs
them on rank 0 like any other :class:`~sa2_pipeline.engine.callbacks.Callback` and never
learns that MLflow exists. Without an active run they do nothing.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

from sa2_pipeline.engine.callbacks import Callback
from sa2_pipeline.tracking.mlflow_run import active_run_id, hand_over, log_metrics

logger = logging.getLogger(__name__)

#: Where a checkpoint records the MLflow run that wrote it (``state["meta"][...]``).
CHECKPOINT_RUN_KEY = "mlflow_run_id"


def training_callbacks(prefix: str = "") -> list[Callback]:
    """The callbacks that track one training run; ``prefix`` separates folds (``fold0/``)."""
    return [MlflowRunContinuation(prefix), MlflowMetricsLogger(prefix)]


def _record_metrics(record: dict[str, Any], prefix: str) -> dict[str, float]:
    return {
        f"{prefix}{k}": float(v)
        for k, v in record.items()
        if k not in ("epoch", "is_best") and isinstance(v, int | float)
    }


class MlflowMetricsLogger(Callback):
    """Logs every epoch's metrics to the active MLflow run as they happen.

    ``prefix`` separates folds (``fold0/val_dice``). In a data-parallel job it logs, from
    rank 0, into the launcher's run (handed over by :func:`on_launch`).
    """

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix

    def on_launch(self, env: MutableMapping[str, str]) -> None:
        hand_over(env)

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        run_id = active_run_id()
        if run_id is None:
            return
        log_metrics(run_id, _record_metrics(record, self.prefix), int(record["epoch"]))

    def on_fit_start(self, trainer: Any) -> None:
        """Tag the run with what training runs as: ``sa2.<prefix>precision`` (``auto``
        resolved), ``precision_requested`` and ``weight_grad_layout``."""
        run_id = active_run_id()
        runtime = getattr(trainer, "meta", {}).get("runtime")
        if run_id is None or not runtime:
            return
        from mlflow import MlflowClient

        client = MlflowClient()
        for key, value in runtime.items():
            client.set_tag(run_id, f"sa2.{self.prefix}{key}", str(value))


class MlflowRunContinuation(Callback):
    """Links the MLflow run that resumes a checkpoint to the run that wrote it.

    Every checkpoint records the MLflow run active when it was written
    (``meta["mlflow_run_id"]``, written by :meth:`on_save_checkpoint`). When training
    resumes such a checkpoint inside another run (``kedro run`` was killed and started
    again), this callback, at fit start:

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
        self.previous_run_id: str | None = None

    def on_launch(self, env: MutableMapping[str, str]) -> None:
        hand_over(env)

    def on_save_checkpoint(self, trainer: Any, state: dict[str, Any]) -> None:
        state.setdefault("meta", {})[CHECKPOINT_RUN_KEY] = active_run_id()

    def on_load_checkpoint(self, trainer: Any, state: dict[str, Any]) -> None:
        self.previous_run_id = (state.get("meta") or {}).get(CHECKPOINT_RUN_KEY)

    def on_fit_start(self, trainer: Any) -> None:
        old, new = self.previous_run_id, active_run_id()
        if not trainer.resumed_from_epoch or not old or not new or old == new:
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
            log_metrics(new, _record_metrics(record, self.prefix), int(record["epoch"]))
        logger.info("MLflow run %s continues run %s from epoch %s (%d epochs re-logged)",
                    new, old, epoch, len(trainer.history))
