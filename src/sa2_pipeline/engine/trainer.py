"""The training loop: epochs, validation, model selection, checkpoints and resume.

The trainer owns no data or model construction: it receives a model, a loss, an optimiser,
an epoch scheduler, a training loader whose sampler yields ``(epoch, index)`` pairs and a
validation function. Everything that changes during training (weights, optimiser,
scheduler, gradient scaler, random states, history, best weights, patience counter) is in
one checkpoint written atomically after every epoch, so a run killed at any point and
started again with the same arguments ends exactly where an uninterrupted run would.

Data-parallel training (``world_size > 1``, inside a ``torchrun`` worker with the process
group initialised and the model wrapped in ``DistributedDataParallel``): every rank trains
its share of the epoch; the training loss and sample count are summed over ranks;
validation runs on rank 0 and its metrics are broadcast, so every rank makes the same
selection and early-stopping decision; only rank 0 writes checkpoints (with every rank's
random state) and runs the callbacks; a resumed checkpoint is read by rank 0 and broadcast.
With ``world_size == 1`` no collective is ever called.
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

from sa2_pipeline.config import TrainingConfig
from sa2_pipeline.engine import distributed
from sa2_pipeline.engine.callbacks import Callback
from sa2_pipeline.engine.checkpoint import load_checkpoint, save_atomic
from sa2_pipeline.engine.optim import EpochScheduler
from sa2_pipeline.runtime.devices import get_rng_state, set_rng_state
from sa2_pipeline.runtime.precision import autocast, resolve_precision

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
        precision: ``fp32``, ``bf16``, ``fp16`` or ``auto``: the forward pass runs under
            autocast to it (:mod:`sa2_pipeline.runtime.precision`).
        channels_last: Convert input batches to channels-last.
        callbacks: Lifecycle hooks (logging, experiment tracking); they may add their own
            state to every checkpoint and read it back on resume.
        meta: Stored in the checkpoint beside the weights (model name, kwargs, split...).
        rank / world_size: This process's place in a data-parallel job (defaults: none).
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
        precision: str = TrainingConfig.precision,
        channels_last: bool = False,
        callbacks: Sequence[Callback] = (),
        meta: dict[str, Any] | None = None,
        rank: int = 0,
        world_size: int = 1,
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
        self.precision = precision
        self.compute_dtype = resolve_precision(precision, device)
        self.channels_last = channels_last
        self.callbacks = list(callbacks)
        self.meta = dict(meta or {})
        self.rank = rank
        self.world_size = world_size
        self.distributed = world_size > 1
        # Gradient scaling only matters for float16 (bf16 has float32's exponent range).
        self.scaler = torch.amp.GradScaler(
            device.type, enabled=self.compute_dtype == torch.float16 and device.type == "cuda"
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
        callbacks = self._rank_callbacks()
        for cb in callbacks:
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
            for cb in callbacks:
                cb.on_epoch_end(self, record)
        stopped_early = self.epoch < self.epochs
        for cb in callbacks:
            cb.on_fit_end(self)
        if self.best_state is None:  # no epoch was eligible for selection
            self.best_state = _cpu_state(self.model)
            self.best_epoch = self.epoch
        if self.distributed:  # rank 0's copy (ranks differ in normalisation buffers)
            self.best_state = distributed.broadcast_object(self.best_state if self.rank == 0
                                                           else None)
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
        """One pass over the epoch's samples: mean training loss and samples seen.

        Data-parallel: both are over all ranks.
        """
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
            with autocast(self.device, self.compute_dtype):
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
        if self.distributed:
            loss_sum, samples = distributed.all_reduce_sum([float(total), count], self.device)
            return {"train_loss": loss_sum / samples, "samples": int(samples)}
        return {"train_loss": float(total) / count, "samples": count}

    def validate(self) -> dict[str, float]:
        """Validation metrics of the current weights (model restored to train mode).

        Data-parallel: rank 0 validates the unwrapped network (a DDP forward would wait
        for the other ranks) and every rank receives its metrics.
        """
        if self.distributed:
            metrics = self._validate_here(_unwrap(self.model)) if self.rank == 0 else None
            return distributed.broadcast_object(metrics)
        return self._validate_here(self.model)

    def _validate_here(self, model: torch.nn.Module) -> dict[str, float]:
        was_training = model.training
        model.eval()
        try:
            metrics = self.validate_fn(model)
        finally:
            model.train(was_training)
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
            "meta": dict(self.meta),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        # The unwrapped network: the keys carry no "_orig_mod." / "module." prefix.
        _unwrap(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        per_rank = state.get("rng_ranks")
        if per_rank is not None and len(per_rank) == self.world_size:
            set_rng_state(per_rank[self.rank])
        else:  # single process, or resumed with another world size (not bit-identical)
            set_rng_state(state["rng"])
        self.epoch = int(state["epoch"])
        self.best_score = float(state["best_score"])
        self.best_epoch = int(state["best_epoch"])
        self.best_state = state["best_state"]
        self.epochs_without_improvement = int(state["epochs_without_improvement"])
        self.history = list(state["history"])

    def _rank_callbacks(self) -> list[Callback]:
        """The callbacks this process runs: all of them on rank 0, none elsewhere."""
        return self.callbacks if self.rank == 0 else []

    def _checkpoint_state(self) -> dict[str, Any]:
        """:meth:`state_dict` plus what the callbacks add to it (rank 0 only)."""
        state = self.state_dict()
        for cb in self._rank_callbacks():
            cb.on_save_checkpoint(self, state)
        return state

    def save_checkpoint(self) -> None:
        if self.checkpoint_path is None:
            return
        if not self.distributed:
            save_atomic(self._checkpoint_state(), self.checkpoint_path)
            return
        rng_ranks = distributed.gather_objects(get_rng_state())
        if self.rank == 0:
            state = self._checkpoint_state()
            state["rng_ranks"] = rng_ranks
            save_atomic(state, self.checkpoint_path)
        distributed.barrier()  # nobody runs ahead of a checkpoint that may fail

    def _maybe_resume(self) -> None:
        path = self.checkpoint_path
        if path is None:
            return
        if self.distributed:
            # Rank 0 reads and checks it; every rank gets the same state (no shared file
            # system needed between nodes).
            state = self._read_checkpoint(path) if self.rank == 0 else None
            state = distributed.broadcast_object(state)
        else:
            state = self._read_checkpoint(path)
        if state is None:
            return
        self.load_state_dict(state)
        self.resumed_from_epoch = self.epoch
        for cb in self._rank_callbacks():
            cb.on_load_checkpoint(self, state)
        logger.info("resumed from %s after epoch %d", path, self.epoch)

    def _read_checkpoint(self, path: Path) -> dict[str, Any] | None:
        """The checkpoint at ``path`` if it exists and belongs to this run, else ``None``."""
        if not path.exists():
            return None
        state = load_checkpoint(path)
        if not belongs_to_run(state, self.fingerprint):
            logger.warning(
                "%s belongs to a different run (model, data or settings changed); "
                "starting from scratch and replacing it",
                path,
            )
            return None
        return state


def belongs_to_run(state: dict[str, Any], fingerprint: str) -> bool:
    """Whether a loaded checkpoint is this format and this run's (same fingerprint)."""
    return (state.get("format") == CHECKPOINT_FORMAT
            and state.get("fingerprint") == fingerprint)


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The network inside torch.compile / DistributedDataParallel wrappers."""
    inner = getattr(model, "_orig_mod", model)
    if isinstance(inner, torch.nn.parallel.DistributedDataParallel | torch.nn.DataParallel):
        inner = inner.module
    return getattr(inner, "_orig_mod", inner)


def _cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    # Unwrapped so keys never carry "_orig_mod." or "module.".
    return {k: v.detach().to("cpu", copy=True) for k, v in _unwrap(model).state_dict().items()}


def _to_float(outputs: Any) -> Any:
    if isinstance(outputs, tuple | list):
        return type(outputs)(o.float() for o in outputs)
    return outputs.float()


