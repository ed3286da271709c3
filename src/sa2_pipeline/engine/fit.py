"""Train a segmentation model from in-memory images and masks (no Kedro involved).

:func:`fit_segmentation_model` is what the training pipeline's node calls; tests call it
directly. It builds the model, loss, optimiser, schedule, data loader and validation from
typed configs, runs :class:`~sa2_pipeline.engine.trainer.Trainer` with a checkpoint folder
keyed by a fingerprint of everything that determines the result, and returns a model bundle
(:mod:`sa2_pipeline.models.bundle`) plus the history.

With ``training.distributed`` asking for more than one process, the same call launches
``torchrun`` and returns what its workers computed (:mod:`sa2_pipeline.engine.distributed`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sa2_pipeline.config import ModelConfig, TrainingConfig

if TYPE_CHECKING:
    from sa2_pipeline.engine.distributed import WorkerInfo

logger = logging.getLogger(__name__)

# Settings that change how fast a run goes but not what it computes: they do not enter
# the fingerprint, so a run can be resumed with more workers or threads.
# ``distributed`` is here too although it does change the result (``batch_size`` is per
# process, so the world size changes every step's batch): a run may be resumed with
# another number of processes or nodes -- it continues correctly but does not end
# bit-identical to an uninterrupted run with either world size. Resuming with the same
# world size is exact.
_RUNTIME_ONLY = (
    "num_workers", "num_threads", "resume", "checkpoint_dir", "val_batch_size", "distributed",
)


_CODE_PACKAGES = ("engine", "models", "losses", "dataloading", "metrics", "inference")


def code_fingerprint() -> str:
    """Hash of the library code that determines a training result.

    Part of the run fingerprint, so a checkpoint written by older code (a bug fix, a new
    loss) is never resumed as if it were this code's: the run starts over instead.
    """
    import sa2_pipeline

    root = Path(sa2_pipeline.__file__).parent
    h = hashlib.sha256()
    for package in _CODE_PACKAGES:
        for file in sorted((root / package).rglob("*.py")):
            h.update(str(file.relative_to(root)).encode())
            h.update(file.read_bytes())
    return h.hexdigest()


def run_fingerprint(
    model_cfg: ModelConfig,
    train_cfg: TrainingConfig,
    train_images: Mapping[str, np.ndarray],
    train_masks: Mapping[str, np.ndarray],
    val_images: Mapping[str, np.ndarray],
    extra: Mapping[str, Any] | None = None,
) -> str:
    """A hash of the model, the settings that affect results and the exact data."""
    settings = {k: v for k, v in asdict(train_cfg).items() if k not in _RUNTIME_ONLY}
    h = hashlib.sha256()
    h.update(json.dumps([asdict(model_cfg), settings, dict(extra or {})], sort_keys=True,
                        default=str).encode())
    for name, bundle in (("train", train_images), ("mask", train_masks), ("val", val_images)):
        for key in sorted(bundle):
            arr = np.ascontiguousarray(bundle[key])
            h.update(f"{name}/{key}/{arr.shape}/{arr.dtype}".encode())
            h.update(arr.data)
    return h.hexdigest()


def fit_segmentation_model(
    train_images: Mapping[str, np.ndarray],
    train_masks: Mapping[str, np.ndarray],
    val_images: Mapping[str, np.ndarray],
    val_masks: Mapping[str, np.ndarray],
    model_cfg: ModelConfig,
    train_cfg: TrainingConfig,
    *,
    mode: str = "native",
    eval_patch_size: int = 256,
    run_name: str = "run",
    callbacks: Sequence[Any] = (),
    metric_prefix: str = "",
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Train on ``train_*``, select on ``val_*`` only, return ``(model_bundle, history)``.

    Args:
        train_images / train_masks: uint8 HWC images and uint8 HW label masks by id.
        val_images / val_masks: The validation split (never the test set).
        model_cfg / train_cfg: Parsed ``params:model`` / ``params:training``.
        mode: ``"native"`` samples ``patch_size`` patches from full-size images;
            ``"resize"`` trains on the (already resized) whole images, as the paper.
        eval_patch_size: Sliding-window tile size for validation and later inference.
        run_name: Names the checkpoint folder (e.g. ``"fold0"``).
        callbacks: Extra trainer callbacks (MLflow logging is added automatically). With
            several processes they must be picklable; they run on rank 0 only.
        metric_prefix: Prefix of the per-epoch metric names logged to MLflow.

    Each history record holds the epoch's metrics, ``lr``, ``samples`` (training samples
    seen in the epoch, over all processes), ``is_best``, ``best_val_dice`` and
    ``epoch_seconds``.

    Data-parallel (``train_cfg.distributed``: ``nproc_per_node * nnodes > 1``): called in
    an ordinary process, this launches ``torchrun`` with one worker per process, waits,
    and returns the workers' result; the active MLflow run receives the per-epoch metrics
    from rank 0 and stays the active run. Called inside a ``torchrun`` worker
    (``WORLD_SIZE > 1``), it trains its share under ``DistributedDataParallel``.

    Raises:
        RuntimeError: ``torchrun`` failed (names the exit code and the log); the
            checkpoint written so far is kept, so a rerun resumes.
    """

    from sa2_pipeline.engine import distributed

    _check_pairs(train_images, train_masks, "training")
    _check_pairs(val_images, val_masks, "validation")
    fingerprint = run_fingerprint(
        model_cfg, train_cfg, train_images, train_masks, val_images,
        extra={"mode": mode, "eval_patch_size": eval_patch_size, "code": code_fingerprint()},
    )
    run_folder = Path(train_cfg.checkpoint_dir) / f"{run_name}-{fingerprint[:12]}"
    # Two runs started together wait for each other instead of both training into the
    # same last.pt; the second then resumes the finished checkpoint at once.
    with _run_lock(run_folder, distributed.worker_info().distributed):
        return _fit_launch(train_images, train_masks, val_images, val_masks, model_cfg,
                           train_cfg, mode=mode, eval_patch_size=eval_patch_size,
                           run_name=run_name, callbacks=callbacks,
                           metric_prefix=metric_prefix, fingerprint=fingerprint,
                           run_folder=run_folder)


def warm_start(model: Any, path: str | Path, model_cfg: ModelConfig) -> None:
    """Load the weights of the bundle file ``path`` (or of its member of the same
    architecture, for a fold ensemble) into ``model``.

    Raises:
        ValueError: The file holds no member with ``model_cfg``'s name and settings.
    """
    import torch

    from sa2_pipeline.models.bundle import members_of

    bundle = torch.load(path, map_location="cpu", weights_only=False)
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


def _run_lock(run_folder: Path, in_worker: bool):
    """The lock of one training run folder (not taken again inside torchrun workers)."""
    from sa2_pipeline.retraining.locks import exclusive_lock

    if in_worker:
        return contextlib.nullcontext()
    return exclusive_lock(run_folder.with_name(f".{run_folder.name}.lock"), wait=-1,
                          what=f"training into {run_folder}")


def _fit_launch(train_images, train_masks, val_images, val_masks, model_cfg, train_cfg, *,
                mode, eval_patch_size, run_name, callbacks, metric_prefix, fingerprint,
                run_folder):
    import torch

    from sa2_pipeline.engine import distributed
    from sa2_pipeline.engine.runtime import select_device

    if distributed.launch_needed(train_cfg.distributed):
        return distributed.launch(
            kwargs={
                "train_images": dict(train_images), "train_masks": dict(train_masks),
                "val_images": dict(val_images), "val_masks": dict(val_masks),
                "model_cfg": model_cfg, "train_cfg": train_cfg, "mode": mode,
                "eval_patch_size": eval_patch_size, "run_name": run_name,
                "callbacks": list(callbacks), "metric_prefix": metric_prefix,
            },
            dist_cfg=train_cfg.distributed,
            run_folder=run_folder,
        )
    with contextlib.ExitStack() as stack:
        worker = distributed.worker_info()
        device = select_device(train_cfg.device)
        if worker.distributed:
            if device.type == "cuda":
                device = torch.device("cuda", worker.local_rank)
                torch.cuda.set_device(device)
            stack.enter_context(distributed.process_group(
                distributed.resolve_backend(train_cfg.distributed.backend, device.type)
            ))
        return _fit_here(
            train_images=train_images, train_masks=train_masks, val_images=val_images,
            val_masks=val_masks, model_cfg=model_cfg, train_cfg=train_cfg, mode=mode,
            eval_patch_size=eval_patch_size, callbacks=callbacks,
            metric_prefix=metric_prefix, device=device, worker=worker,
            fingerprint=fingerprint, checkpoint_path=run_folder / "last.pt",
        )


def _fit_here(  # noqa: PLR0914 - one straight recipe, kept in one place
    *,
    train_images: Mapping[str, np.ndarray],
    train_masks: Mapping[str, np.ndarray],
    val_images: Mapping[str, np.ndarray],
    val_masks: Mapping[str, np.ndarray],
    model_cfg: ModelConfig,
    train_cfg: TrainingConfig,
    mode: str,
    eval_patch_size: int,
    callbacks: Sequence[Any],
    metric_prefix: str,
    device: Any,
    worker: WorkerInfo,
    fingerprint: str,
    checkpoint_path: Path,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Train in this process (alone, or as one rank of a joined process group)."""
    import torch

    from sa2_pipeline.dataloading.augmentation import build_augmentation
    from sa2_pipeline.dataloading.dataset import PatchDataset, ResizedDataset
    from sa2_pipeline.dataloading.sampling import EpochIndexed, EpochSampler
    from sa2_pipeline.engine.callbacks import (
        EpochLogger,
        MlflowMetricsLogger,
        MlflowRunContinuation,
    )
    from sa2_pipeline.engine.optim import EpochScheduler, build_optimizer
    from sa2_pipeline.engine.runtime import (
        configure_threads,
        resolve_precision,
        seed_everything,
        worker_init,
    )
    from sa2_pipeline.engine.trainer import Trainer
    from sa2_pipeline.losses.segmentation_loss import build_loss
    from sa2_pipeline.models import create_model
    from sa2_pipeline.models.bundle import make_bundle

    configure_threads(train_cfg.num_threads)
    amp_dtype = resolve_precision(train_cfg.precision, device)

    seed_everything(train_cfg.seed)
    model = create_model(model_cfg.name, **model_cfg.kwargs()).to(device)
    if train_cfg.init_from:  # a resumed checkpoint, if any, overrides these weights
        warm_start(model, train_cfg.init_from, model_cfg)
    if train_cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    loss_fn = build_loss(
        model_cfg.num_classes,
        dice_weight=train_cfg.loss.dice_weight,
        bce_weight=train_cfg.loss.bce_weight,
        ce_weight=train_cfg.loss.ce_weight,
        head_weights=list(train_cfg.loss.head_weights),
    )
    optimizer = build_optimizer(model, train_cfg.lr, train_cfg.weight_decay, device)
    scheduler = EpochScheduler(optimizer, train_cfg.scheduler)

    ids = sorted(train_images)
    images = [train_images[i] for i in ids]
    masks = [train_masks[i] for i in ids]
    augment = build_augmentation(train_cfg.augmentation.name)
    if mode == "native":
        dataset = PatchDataset(
            images, masks,
            patch_size=train_cfg.patch_size,
            samples_per_epoch=train_cfg.samples_per_epoch,
            foreground_oversample=train_cfg.foreground_oversample,
            augment=augment,
            seed=train_cfg.seed,
            channel_order=train_cfg.channel_order,
            num_classes=model_cfg.num_classes,
        )
        shuffle = False  # every index is already an independent random patch
    elif mode == "resize":
        dataset = ResizedDataset(
            images, masks,
            size=images[0].shape[:2],  # build_model_inputs already resized them
            augment=augment,
            seed=train_cfg.seed,
            channel_order=train_cfg.channel_order,
            num_classes=model_cfg.num_classes,
        )
        shuffle = True
    else:
        raise ValueError(f"mode must be 'native' or 'resize', got {mode!r}")

    # Data-parallel: rank r takes every world_size-th sample (the epoch is padded to a
    # multiple of world_size), so every rank runs the same number of steps.
    sampler = EpochSampler(len(dataset), seed=train_cfg.seed, shuffle=shuffle,
                           rank=worker.rank, world_size=worker.world_size)
    loader = torch.utils.data.DataLoader(
        EpochIndexed(dataset),
        batch_size=train_cfg.batch_size,
        sampler=sampler,
        num_workers=train_cfg.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=train_cfg.num_workers > 0,
        worker_init_fn=worker_init if train_cfg.num_workers > 0 else None,
        drop_last=len(sampler) > train_cfg.batch_size,
    )

    val_ids = sorted(val_images)

    def validate(net: torch.nn.Module) -> dict[str, float]:
        return _validate(
            net, val_ids, val_images, val_masks,
            num_classes=model_cfg.num_classes,
            patch_size=eval_patch_size,
            batch_size=train_cfg.val_batch_size,
            channel_order=train_cfg.channel_order,
            device=device,
            amp_dtype=amp_dtype,
        )

    run_model = model
    if worker.distributed:
        run_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if train_cfg.compile:
        run_model = torch.compile(run_model)
    trainer = Trainer(
        run_model, loss_fn, optimizer, scheduler, loader, validate,
        device=device,
        epochs=train_cfg.epochs,
        patience=train_cfg.early_stopping_patience,
        select_after_epoch=train_cfg.select_after_epoch,
        checkpoint_path=checkpoint_path,
        resume=train_cfg.resume,
        fingerprint=fingerprint,
        amp_dtype=amp_dtype,
        channels_last=train_cfg.channels_last,
        callbacks=[
            EpochLogger(), MlflowRunContinuation(metric_prefix),
            MlflowMetricsLogger(metric_prefix), *callbacks,
        ],
        meta={"train_ids": ids, "val_ids": val_ids, "mode": mode},
        rank=worker.rank,
        world_size=worker.world_size,
    )
    if worker.rank == 0:
        logger.info(
            "training %s (%d parameters) on %s%s, precision %s, %d train / %d val images, "
            "checkpoints in %s",
            model_cfg.name, sum(p.numel() for p in model.parameters()), device,
            f" x {worker.world_size} processes" if worker.distributed else "",
            train_cfg.precision, len(ids), len(val_ids), checkpoint_path.parent,
        )
    result = trainer.fit()
    bundle = make_bundle(
        model_name=model_cfg.name,
        init_kwargs=model_cfg.kwargs(),
        state_dict=result.best_state_dict,
        channel_order=train_cfg.channel_order,
        patch_size=eval_patch_size,
        resize_to=images[0].shape[0] if mode == "resize" else None,
        metadata={
            "best_epoch": result.best_epoch,
            "best_val_dice": result.best_score,
            "epochs_run": result.epochs_run,
            "stopped_early": result.stopped_early,
            "resumed_from_epoch": result.resumed_from_epoch,
            "fingerprint": fingerprint,
            "world_size": worker.world_size,
            "train_ids": ids,
            "val_ids": val_ids,
            "mode": mode,
        },
    )
    return bundle, result.history


def _validate(
    model: Any,
    ids: Sequence[str],
    images: Mapping[str, np.ndarray],
    masks: Mapping[str, np.ndarray],
    *,
    num_classes: int,
    patch_size: int,
    batch_size: int,
    channel_order: str,
    device: Any,
    amp_dtype: Any,
) -> dict[str, float]:
    from sa2_pipeline.inference.predict import predict_probabilities, probabilities_to_mask
    from sa2_pipeline.metrics.segmentation import dice_iou, per_class_dice_iou

    dices, ious = [], []
    stream = predict_probabilities(
        model, ((i, images[i]) for i in ids),
        num_classes=num_classes, patch_size=patch_size, batch_size=batch_size,
        channel_order=channel_order, device=device, autocast_dtype=amp_dtype,
    )
    for image_id, probs in stream:
        pred = probabilities_to_mask(probs)
        if num_classes == 1:
            d, j = dice_iou(pred, masks[image_id])
        else:
            scores = per_class_dice_iou(pred, masks[image_id], num_classes)
            d, j = scores["dice_mean"], scores["iou_mean"]
        dices.append(d)
        ious.append(j)
    return {"val_dice": float(np.mean(dices)), "val_iou": float(np.mean(ious))}


def _check_pairs(images: Mapping[str, Any], masks: Mapping[str, Any], what: str) -> None:
    if not images:
        raise ValueError(f"the {what} split is empty")
    missing = sorted(set(images) ^ set(masks))
    if missing:
        raise ValueError(f"{what} images and masks do not pair up; unmatched ids: {missing}")
