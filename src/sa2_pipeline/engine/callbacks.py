"""Training callbacks: epoch logging, MLflow metrics while training runs."""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sa2_pipeline.engine.trainer import Trainer

logger = logging.getLogger(__name__)


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


class MlflowMetricsLogger(Callback):
    """Logs every epoch's metrics to the active MLflow run as they happen.

    Does nothing when no MLflow run is active (plain library use, tests), so the engine
    never depends on MLflow. ``prefix`` separates folds (``fold0/val_dice``).
    """

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        # If MLflow was never imported there can be no active run: skip the 4 s import.
        mlflow = sys.modules.get("mlflow")
        if mlflow is None or mlflow.active_run() is None:
            return
        metrics = {
            f"{self.prefix}{k}": float(v)
            for k, v in record.items()
            if k not in ("epoch", "is_best") and isinstance(v, int | float)
        }
        mlflow.log_metrics(metrics, step=int(record["epoch"]))
