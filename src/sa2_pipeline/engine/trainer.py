"""The training loop: epochs, validation, model selection, checkpoints and resume.

The trainer owns no data or model construction: it receives a model, a loss, an optimiser,
an epoch scheduler, a training loader whose sampler yields ``(epoch, index)`` pairs and a
validation function. Everything that changes during training (weights, optimiser,
scheduler, gradient scaler, random states, history, best weights, patience counter) is in
one checkpoint written atomically after every epoch, so a run killed at any point and
started again with the same arguments ends exactly where an uninterrupted run would.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sa2_pipeline.engine.callbacks import Callback
from sa2_pipeline.engine.checkpoint import load_checkpoint, save_atomic
from sa2_pipeline.engine.optim import EpochScheduler
from sa2_pipeline.engine.runtime import autocast, get_rng_state, set_rng_state

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1


@dataclass
class FitResult:
    """What training hands over: the selected weights and the history."""

    best_state_dict: dict[str, torch.Tensor]
    best_epoch: int
    best_score: float
    epochs_run: int
    stopped_early: bool
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from_epoch: int = 0


class Trainer:
    """Trains one model on one split.

    Args:
        model: The network, already on ``device`` (and in channels-last if wanted).
        loss_fn: ``loss_fn(outputs, target) -> scalar``; outputs may be a tuple of heads.
        optimizer: The optimiser over ``model``'s parameters.
        scheduler: Stepped once per epoch.
        train_loader: Yields ``(image, target)`` batches; its ``sampler`` must have
            ``set_epoch(epoch)`` so epoch ``e`` always sees the same samples.
        validate: ``validate(model) -> {"val_dice": float, ...}``; called in eval mode.
        device: Where the batches go.
        epochs: Maximum number of epochs.
        patience: Early stopping: stop after this many epochs without a better val Dice.
        select_after_epoch: Epochs ``<=`` this are never selected as best (release: 5).
        checkpoint_path: ``last.pt`` written every epoch; resumed from when ``resume``.
        fingerprint: Identifies model + data + settings; a checkpoint with another
            fingerprint is not resumed from (it belongs to a different run).
        amp_dtype: Autocast dtype, ``None`` for float32.
        channels_last: Convert input batches to channels-last.
        callbacks: Lifecycle hooks (logging, MLflow).
        meta: Stored in the checkpoint beside the weights (model name, kwargs, split...).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        loss_fn: Callable[[Any, torch.Tensor], torch.Tensor],
        optimizer: torch.optim.Optimizer,
        scheduler: EpochScheduler,
        train_loader: torch.utils.data.DataLoader,
        validate: Callable[[torch.nn.Module], dict[str, float]],
        *,
        device: torch.device,
        epochs: int,
        patience: int,
        select_after_epoch: int = 0,
        checkpoint_path: str | Path | None = None,
        resume: bool = True,
        fingerprint: str = "",
        amp_dtype: torch.dtype | None = None,
        channels_last: bool = False,
        callbacks: Sequence[Callback] = (),
        meta: dict[str, Any] | None = None,
    ) -> None:
        self.model = model
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.train_loader = train_loader
        self.validate_fn = validate
        self.device = device
        self.epochs = epochs
        self.patience = patience
        self.select_after_epoch = select_after_epoch
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path else None
        self.resume = resume
        self.fingerprint = fingerprint
        self.amp_dtype = amp_dtype
        self.channels_last = channels_last
        self.callbacks = list(callbacks)
        self.meta = dict(meta or {})
        # Gradient scaling only matters for float16 (bf16 has float32's exponent range).
        self.scaler = torch.amp.GradScaler(
            device.type, enabled=amp_dtype == torch.float16 and device.type == "cuda"
        )
        self.epoch = 0  # completed epochs
        self.best_score = float("-inf")
        self.best_epoch = 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.epochs_without_improvement = 0
        self.history: list[dict[str, Any]] = []
        self.resumed_from_epoch = 0

    # ------------------------------------------------------------------ lifecycle
    def fit(self) -> FitResult:
        """Run (or resume) training and return the best weights by validation Dice."""
        if self.resume:
            self._maybe_resume()
        for cb in self.callbacks:
            cb.on_fit_start(self)
        while self.epoch < self.epochs and self.epochs_without_improvement < self.patience:
            epoch = self.epoch + 1
            start = time.perf_counter()
            train_metrics = self.train_one_epoch(epoch)
            val_metrics = self.validate()
            lr = self.scheduler.lr
            self.scheduler.step_epoch()
            record = self._select(epoch, {**train_metrics, **val_metrics, "lr": lr})
            record["epoch_seconds"] = time.perf_counter() - start
            self.history.append(record)
            self.epoch = epoch
            self.save_checkpoint()
            for cb in self.callbacks:
                cb.on_epoch_end(self, record)
        stopped_early = self.epoch < self.epochs
        for cb in self.callbacks:
            cb.on_fit_end(self)
        if self.best_state is None:  # no epoch was eligible for selection
            self.best_state = _cpu_state(self.model)
            self.best_epoch = self.epoch
        return FitResult(
            best_state_dict=self.best_state,
            best_epoch=self.best_epoch,
            best_score=self.best_score,
            epochs_run=self.epoch,
            stopped_early=stopped_early,
            history=list(self.history),
            resumed_from_epoch=self.resumed_from_epoch,
        )

    def train_one_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the epoch's samples; returns the mean training loss."""
        from tqdm.auto import tqdm

        self.model.train()
        sampler = self.train_loader.sampler
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        total, count = torch.zeros((), device=self.device), 0
        batches = tqdm(
            self.train_loader,
            desc=f"epoch {epoch}/{self.epochs}",
            leave=False,
            disable=not sys.stderr.isatty(),
        )
        for image, target in batches:
            image = image.to(self.device, non_blocking=True)
            target = target.to(self.device, non_blocking=True)
            if self.channels_last:
                image = image.contiguous(memory_format=torch.channels_last)
            self.optimizer.zero_grad(set_to_none=True)
            with autocast(self.device, self.amp_dtype):
                outputs = self.model(image)
            # The loss runs in float32: it is cheap and keeps BCE/Dice numerically safe.
            loss = self.loss_fn(_to_float(outputs), target)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            total += loss.detach() * image.shape[0]
            count += image.shape[0]
        if count == 0:
            raise RuntimeError("the training loader produced no batches")
        return {"train_loss": float(total) / count}

    def validate(self) -> dict[str, float]:
        """Validation metrics of the current weights (model restored to train mode)."""
        was_training = self.model.training
        self.model.eval()
        try:
            metrics = self.validate_fn(self.model)
        finally:
            self.model.train(was_training)
        if "val_dice" not in metrics:
            raise KeyError("the validation function must return 'val_dice'")
        return metrics

    # ------------------------------------------------------------------ selection
    def _select(self, epoch: int, record: dict[str, Any]) -> dict[str, Any]:
        score = float(record["val_dice"])
        eligible = epoch > self.select_after_epoch
        is_best = eligible and score > self.best_score
        if is_best:
            self.best_score = score
            self.best_epoch = epoch
            self.best_state = _cpu_state(self.model)
            self.epochs_without_improvement = 0
        elif eligible:
            self.epochs_without_improvement += 1
        record = {"epoch": epoch, **record, "is_best": is_best}
        record["best_val_dice"] = self.best_score if self.best_state is not None else score
        return record

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this run exactly."""
        return {
            "format": CHECKPOINT_FORMAT,
            "fingerprint": self.fingerprint,
            "epoch": self.epoch,
            "model": _cpu_state(self.model),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": get_rng_state(),
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "best_state": self.best_state,
            "epochs_without_improvement": self.epochs_without_improvement,
            "history": self.history,
            "meta": self.meta,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.epoch = int(state["epoch"])
        self.best_score = float(state["best_score"])
        self.best_epoch = int(state["best_epoch"])
        self.best_state = state["best_state"]
        self.epochs_without_improvement = int(state["epochs_without_improvement"])
        self.history = list(state["history"])

    def save_checkpoint(self) -> None:
        if self.checkpoint_path is not None:
            save_atomic(self.state_dict(), self.checkpoint_path)

    def _maybe_resume(self) -> None:
        path = self.checkpoint_path
        if path is None or not path.exists():
            return
        state = load_checkpoint(path)
        if state.get("format") != CHECKPOINT_FORMAT or state.get("fingerprint") != (
            self.fingerprint
        ):
            logger.warning(
                "%s belongs to a different run (model, data or settings changed); "
                "starting from scratch and replacing it",
                path,
            )
            return
        self.load_state_dict(state)
        self.resumed_from_epoch = self.epoch
        logger.info("resumed from %s after epoch %d", path, self.epoch)


def _cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    # Unwrap torch.compile / DDP so keys never carry "_orig_mod." or "module.".
    inner = getattr(model, "_orig_mod", model)
    inner = getattr(inner, "module", inner)
    return {k: v.detach().to("cpu", copy=True) for k, v in inner.state_dict().items()}


def _to_float(outputs: Any) -> Any:
    if isinstance(outputs, tuple | list):
        return type(outputs)(o.float() for o in outputs)
    return outputs.float()


