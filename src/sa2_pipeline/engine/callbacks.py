"""Training callbacks: the hooks the trainer calls, and the per-epoch log line.

Callbacks are how anything outside the training loop (experiment tracking, tests that
simulate a kill) takes part in it. This module imports nothing from the trainer: every
hook receives the :class:`~sa2_pipeline.engine.trainer.Trainer` as its first argument.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

from sa2_pipeline.runtime import threads as runtime_threads

logger = logging.getLogger(__name__)


class Callback:
    """Hooks into the trainer's lifecycle; every method is optional.

    In a data-parallel job the callbacks are sent to every worker (so they must be
    picklable) but only rank 0 calls them.
    """

    def on_launch(self, env: MutableMapping[str, str]) -> None:
        """Called in the launching process before ``torchrun`` starts; ``env`` is the
        workers' environment, to adjust (e.g. to hand state over to rank 0)."""

    def on_fit_start(self, trainer: Any) -> None:
        """Called once before the first (or first resumed) epoch."""

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        """Called after validation and checkpointing of every epoch."""

    def on_fit_end(self, trainer: Any) -> None:
        """Called once when training stops (completed or stopped early)."""

    def on_save_checkpoint(self, trainer: Any, state: dict[str, Any]) -> None:
        """Called with every checkpoint's ``state`` before it is written; a callback may
        add its own entries (e.g. under ``state["meta"]``)."""

    def on_load_checkpoint(self, trainer: Any, state: dict[str, Any]) -> None:
        """Called with the checkpoint ``state`` a run resumes from, after the trainer
        restored its own part (not called when training starts from scratch)."""


class EpochLogger(Callback):
    """One log line per epoch."""

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
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


class ThreadRebalancer(Callback):
    """For the automatic thread count (``num_threads: 0``) on a CPU: after every epoch
    torch's threads are set to :func:`~sa2_pipeline.runtime.threads.auto_threads` again
    (logged when they change), so a training gives up a core while another process needs
    it and takes it back once it is free (docs/environment.md, "CPU threads")."""

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:  # noqa: ARG002
        import torch


        threads, before = runtime_threads.auto_threads(), torch.get_num_threads()
        if threads != before:
            logger.info("torch now uses %d thread(s) (automatic; was %d)", threads, before)
            torch.set_num_threads(threads)
