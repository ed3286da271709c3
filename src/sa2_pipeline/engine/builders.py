"""Named builders for one training run: each makes one part from a :class:`FitSpec`.

:func:`sa2_pipeline.engine.fit.fit` calls them in this order (the order matters: the
model's initial weights come from the random state right after seeding)::

    build_model -> build_loss -> build_optimizer -> build_train_loader
        -> build_validator -> build_trainer -> (train) -> build_bundle
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sa2_pipeline.config import ModelConfig, TrainingConfig
from sa2_pipeline.engine import distributed
from sa2_pipeline.engine.callbacks import EpochLogger, ThreadRebalancer
from sa2_pipeline.engine.distributed import WorkerInfo
from sa2_pipeline.engine.optim import EpochScheduler
from sa2_pipeline.engine.optim import build_optimizer as _adam
from sa2_pipeline.engine.spec import FitSpec
from sa2_pipeline.engine.trainer import FitResult, Trainer
from sa2_pipeline.engine.validation import validate
from sa2_pipeline.models import create_model
from sa2_pipeline.models.bundle import load_bundle_file, make_bundle, members_of
from sa2_pipeline.runtime import precision_probe as probe
from sa2_pipeline.runtime.threads import is_automatic, worker_init

logger = logging.getLogger(__name__)


def build_model(model_cfg: ModelConfig, train_cfg: TrainingConfig,
                device: torch.device) -> torch.nn.Module:
    """The network on ``device``, in channels-last memory format if asked."""

    model = create_model(model_cfg.name, **model_cfg.kwargs()).to(device)
    if train_cfg.init_from:  # a resumed checkpoint, if any, overrides these weights
        warm_start(model, train_cfg.init_from, model_cfg)
    if train_cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def resolve_runtime(spec: FitSpec, model: torch.nn.Module, device: torch.device,
                    worker: WorkerInfo, *, checkpoint_path: Path | None = None,
                    fingerprint: str = "") -> tuple[FitSpec, dict[str, str]]:
    """``spec`` with ``training.precision`` made concrete for this machine, and what was
    chosen. ``auto`` (and the weight-gradient layout of a channels-last fp32 CPU step) is
    measured once per machine and model, then cached (:mod:`~sa2_pipeline.engine.
    precision_probe`); a data-parallel rank never measures (it reads the cache).

    A run that resumes ``checkpoint_path`` (same ``fingerprint``) keeps the choice it was
    trained with, whatever the cache says now: the layout changes the gradients' last
    bits, and a resumed run must be bit-identical to one that was never stopped."""
    from dataclasses import replace


    cfg = spec.train_cfg
    size = cfg.patch_size if spec.mode == "native" else spec.train_images[
        spec.train_ids[0]].shape[0]
    shape = (cfg.batch_size, spec.model_cfg.in_channels, size, size)
    kept = _checkpoint_runtime(checkpoint_path, fingerprint, worker) if cfg.resume else None
    if kept is not None:
        choice = probe.RuntimeChoice(kept["precision"], kept["weight_grad_layout"])
        probe.apply(choice)
        logger.info("precision %s (weight gradients %s), as in the checkpoint resumed",
                    choice.precision, choice.weight_grad_layout)
    elif worker.distributed:
        key = probe.probe_key(model, shape, "train", cfg.channels_last)
        choice = probe.choose(cfg.precision, device, key, None,
                              channels_last=cfg.channels_last)
        probe.apply(choice)
    else:
        choice = probe.choose_for_training(
            cfg.precision, model, build_loss(spec.model_cfg, cfg), shape,
            spec.model_cfg.num_classes, device, channels_last=cfg.channels_last)
    used = {"precision_requested": cfg.precision, "precision": choice.precision,
            "weight_grad_layout": choice.weight_grad_layout}
    return replace(spec, train_cfg=replace(cfg, precision=choice.precision)), used


def _checkpoint_runtime(path: Path | None, fingerprint: str,
                        worker: WorkerInfo) -> dict[str, str] | None:
    """The runtime choice stored in the resumable checkpoint at ``path`` (``None`` when
    there is none, it belongs to another run, or it predates the choice being stored).
    With several processes rank 0 reads it and every rank gets its answer."""
    from sa2_pipeline.engine.checkpoint import load_checkpoint
    from sa2_pipeline.engine.trainer import belongs_to_run

    runtime = None
    if worker.rank == 0 and path is not None and Path(path).exists():
        state = load_checkpoint(path)
        if belongs_to_run(state, fingerprint):
            stored = dict(state.get("meta", {}).get("runtime") or {})
            if {"precision", "weight_grad_layout"} <= stored.keys():
                runtime = stored
    return distributed.broadcast_object(runtime) if worker.distributed else runtime


def warm_start(model: torch.nn.Module, path: str | Path, model_cfg: ModelConfig) -> None:
    """Load the weights of the bundle file ``path`` (or of its member of the same
    architecture, for a fold ensemble) into ``model``.

    Raises:
        ValueError: The file holds no member with ``model_cfg``'s name and settings.
    """

    bundle = load_bundle_file(path)  # weights-only: a planted pickle is refused unrun
    wanted = model_cfg.kwargs()
    for member in members_of(bundle):
        kwargs = {k: member.get("init_kwargs", {}).get(k) for k in wanted}
        if member.get("model_name") == model_cfg.name and kwargs == wanted:
            model.load_state_dict(member["state_dict"])
            logger.info("warm start from %s", path)
            return
    found = [(m.get("model_name"), m.get("init_kwargs")) for m in members_of(bundle)]
    raise ValueError(f"{path}: no model {model_cfg.name} {wanted} to warm-start from "
                     f"(it holds {found})")


def build_loss(model_cfg: ModelConfig, train_cfg: TrainingConfig) -> torch.nn.Module:
    """Dice + BCE (binary) or Dice + CE (multi-class), weighted over the heads."""
    from sa2_pipeline.losses.segmentation_loss import build_loss as segmentation_loss

    cfg = train_cfg.loss
    return segmentation_loss(
        model_cfg.num_classes,
        dice_weight=cfg.dice_weight,
        bce_weight=cfg.bce_weight,
        ce_weight=cfg.ce_weight,
        head_weights=list(cfg.head_weights),
    )


def build_optimizer(model: torch.nn.Module, train_cfg: TrainingConfig,
                    device: torch.device) -> tuple[torch.optim.Optimizer, EpochScheduler]:
    """Adam and its per-epoch learning-rate schedule."""
    optimizer = _adam(model, train_cfg.lr, train_cfg.weight_decay, device)
    return optimizer, EpochScheduler(optimizer, train_cfg.scheduler)


def _train_dataset(spec: FitSpec) -> tuple[torch.utils.data.Dataset, bool]:
    """The training dataset and whether its samples are shuffled by the sampler."""
    from sa2_pipeline.dataloading.augmentation import build_augmentation
    from sa2_pipeline.dataloading.dataset import PatchDataset, ResizedDataset

    cfg, ids = spec.train_cfg, spec.train_ids
    images = [spec.train_images[i] for i in ids]
    masks = [spec.train_masks[i] for i in ids]
    common = {"augment": build_augmentation(cfg.augmentation.name), "seed": cfg.seed,
              "channel_order": cfg.channel_order, "num_classes": spec.model_cfg.num_classes}
    if spec.mode == "native":
        # Every index is already an independent random patch: no shuffling.
        return PatchDataset(images, masks, patch_size=cfg.patch_size,
                            samples_per_epoch=cfg.samples_per_epoch,
                            foreground_oversample=cfg.foreground_oversample,
                            **common), False
    # build_model_inputs already resized the images.
    return ResizedDataset(images, masks, size=images[0].shape[:2], **common), True


def build_train_loader(spec: FitSpec, worker: WorkerInfo,
                       device: torch.device) -> torch.utils.data.DataLoader:
    """The training loader; its sampler yields ``(epoch, index)`` pairs.

    Data-parallel: rank r takes every world_size-th sample (the epoch is padded to a
    multiple of world_size), so every rank runs the same number of steps.
    """
    from sa2_pipeline.dataloading.sampling import EpochIndexed, EpochSampler

    cfg = spec.train_cfg
    dataset, shuffle = _train_dataset(spec)
    sampler = EpochSampler(len(dataset), seed=cfg.seed, shuffle=shuffle,
                           rank=worker.rank, world_size=worker.world_size)
    return torch.utils.data.DataLoader(
        EpochIndexed(dataset),
        batch_size=cfg.batch_size,
        sampler=sampler,
        num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=cfg.num_workers > 0,
        worker_init_fn=worker_init if cfg.num_workers > 0 else None,
        drop_last=len(sampler) > cfg.batch_size,
    )


def build_validator(spec: FitSpec,
                    device: torch.device) -> Callable[[torch.nn.Module], dict[str, float]]:
    """``validate(net) -> {"val_dice", "val_iou"}``: whole validation images through the
    sliding window, at the training precision."""

    def validator(net: torch.nn.Module) -> dict[str, float]:
        return validate(
            net, spec.val_images, spec.val_masks,
            num_classes=spec.model_cfg.num_classes,
            patch_size=spec.eval_patch_size,
            batch_size=spec.train_cfg.val_batch_size,
            channel_order=spec.train_cfg.channel_order,
            device=device,
            precision=spec.train_cfg.precision,
        )

    return validator


def _wrap(model: torch.nn.Module, worker: WorkerInfo, device: torch.device,
          compile_model: bool) -> torch.nn.Module:
    """DistributedDataParallel in a data-parallel job; ``torch.compile`` if asked."""
    if worker.distributed:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    return torch.compile(model) if compile_model else model


def build_trainer(spec: FitSpec, model: torch.nn.Module, *, device: torch.device,
                  worker: WorkerInfo, fingerprint: str, checkpoint_path: Path,
                  runtime: dict[str, str] | None = None) -> Trainer:
    """The trainer over every part above, checkpointing to ``checkpoint_path``."""
    cfg = spec.train_cfg
    loss_fn = build_loss(spec.model_cfg, cfg)
    optimizer, scheduler = build_optimizer(model, cfg, device)
    loader = build_train_loader(spec, worker, device)
    return Trainer(
        _wrap(model, worker, device, cfg.compile), loss_fn, optimizer, scheduler, loader,
        build_validator(spec, device),
        device=device,
        epochs=cfg.epochs,
        patience=cfg.early_stopping_patience,
        select_after_epoch=cfg.select_after_epoch,
        checkpoint_path=checkpoint_path,
        resume=cfg.resume,
        fingerprint=fingerprint,
        precision=cfg.precision,
        channels_last=cfg.channels_last,
        callbacks=[EpochLogger(), *_thread_callbacks(cfg, device, worker), *spec.callbacks],
        meta={"train_ids": spec.train_ids, "val_ids": spec.val_ids, "mode": spec.mode,
              "runtime": dict(runtime or {})},
        rank=worker.rank,
        world_size=worker.world_size,
    )


def _thread_callbacks(cfg: TrainingConfig, device: torch.device, worker: WorkerInfo) -> list[Any]:
    """:class:`ThreadRebalancer` for a single-process CPU run with the automatic count."""

    if device.type != "cpu" or worker.distributed or not is_automatic(cfg.num_threads):
        return []
    return [ThreadRebalancer()]


def build_bundle(spec: FitSpec, result: FitResult, *, fingerprint: str,
                 worker: WorkerInfo) -> dict[str, Any]:
    """The model bundle of the selected weights, with the run's provenance."""

    first: np.ndarray = spec.train_images[spec.train_ids[0]]
    return make_bundle(
        model_name=spec.model_cfg.name,
        init_kwargs=spec.model_cfg.kwargs(),
        state_dict=result.best_state_dict,
        channel_order=spec.train_cfg.channel_order,
        patch_size=spec.eval_patch_size,
        resize_to=first.shape[0] if spec.mode == "resize" else None,
        metadata={
            "best_epoch": result.best_epoch,
            "best_val_dice": result.best_score,
            "epochs_run": result.epochs_run,
            "stopped_early": result.stopped_early,
            "resumed_from_epoch": result.resumed_from_epoch,
            "fingerprint": fingerprint,
            "world_size": worker.world_size,
            "train_ids": spec.train_ids,
            "val_ids": spec.val_ids,
            "mode": spec.mode,
        },
    )
