"""Train a segmentation model from in-memory images and masks (no Kedro involved).

:func:`fit_segmentation_model` is what the training pipeline's node calls; tests call it
directly. It packs its arguments into a :class:`~sa2_pipeline.engine.spec.FitSpec` and
calls :func:`fit`, which builds the parts of the run with the named builders of
:mod:`sa2_pipeline.engine.builders`, runs the
:class:`~sa2_pipeline.engine.trainer.Trainer` with a checkpoint folder keyed by a
fingerprint of everything that determines the result, and returns a model bundle
(:mod:`sa2_pipeline.models.bundle`) plus the history.

With ``training.distributed`` asking for more than one process, the same call launches
``torchrun`` with the spec and returns what its workers computed
(:mod:`sa2_pipeline.engine.distributed`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sa2_pipeline.config import ModelConfig, TrainingConfig
from sa2_pipeline.engine import distributed
from sa2_pipeline.engine.spec import FitSpec
from sa2_pipeline.locks import exclusive_lock
from sa2_pipeline.runtime.threads import configure_threads

if TYPE_CHECKING:
    from sa2_pipeline.engine.distributed import WorkerInfo

logger = logging.getLogger(__name__)

Result = tuple[dict[str, Any], list[dict[str, Any]]]


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
) -> Result:
    """Train on ``train_*``, select on ``val_*`` only, return ``(model_bundle, history)``.

    The arguments are those of :class:`~sa2_pipeline.engine.spec.FitSpec`. Each history
    record holds the epoch's metrics, ``lr``, ``samples`` (training samples seen in the
    epoch, over all processes), ``is_best``, ``best_val_dice`` and ``epoch_seconds``.

    Data-parallel (``train_cfg.distributed``: ``nproc_per_node * nnodes > 1``): called in
    an ordinary process, this launches ``torchrun`` with one worker per process, waits,
    and returns the workers' result; the callbacks run in rank 0. Called inside a
    ``torchrun`` worker (``WORLD_SIZE > 1``), it trains its share under
    ``DistributedDataParallel``.

    Raises:
        ValueError: Empty or unpaired splits, or an unknown ``mode``.
        RuntimeError: ``torchrun`` failed (names the exit code and the log); the
            checkpoint written so far is kept, so a rerun resumes.
    """
    return fit(FitSpec(
        train_images, train_masks, val_images, val_masks, model_cfg, train_cfg,
        mode=mode, eval_patch_size=eval_patch_size, run_name=run_name,
        callbacks=tuple(callbacks),
    ))


def fit(spec: FitSpec) -> Result:
    """Run ``spec`` here, or launch ``torchrun`` for it when it asks for several processes."""
    from sa2_pipeline.runtime.devices import select_device

    fingerprint = spec.fingerprint()
    run_folder = spec.run_folder(fingerprint)
    worker = distributed.worker_info()
    with contextlib.ExitStack() as stack:
        # Two runs started together wait for each other instead of both training into the
        # same last.pt; the second then resumes the finished checkpoint at once.
        stack.enter_context(_run_lock(run_folder, in_worker=worker.distributed))
        if distributed.launch_needed(spec.train_cfg.distributed):
            return distributed.launch(spec, run_folder=run_folder)
        device = select_device(spec.train_cfg.device)
        if worker.distributed:
            device = distributed.join(stack, spec.train_cfg.distributed.backend, device,
                                      worker)
        return _fit_here(spec, device=device, worker=worker, fingerprint=fingerprint,
                         checkpoint_path=run_folder / "last.pt")


def _run_lock(run_folder: Path, *, in_worker: bool) -> contextlib.AbstractContextManager:
    """The lock of one training run folder (not taken again inside torchrun workers)."""

    if in_worker:
        return contextlib.nullcontext()
    return exclusive_lock(run_folder.with_name(f".{run_folder.name}.lock"), wait=-1,
                          what=f"training into {run_folder}")


def _fit_here(spec: FitSpec, *, device: Any, worker: WorkerInfo, fingerprint: str,
              checkpoint_path: Path) -> Result:
    """Train in this process (alone, or as one rank of a joined process group)."""
    from sa2_pipeline.engine import builders
    from sa2_pipeline.runtime.devices import seed_everything

    configure_threads(spec.train_cfg.num_threads)
    seed_everything(spec.train_cfg.seed)
    model = builders.build_model(spec.model_cfg, spec.train_cfg, device)
    spec, runtime = builders.resolve_runtime(spec, model, device, worker,
                                             checkpoint_path=checkpoint_path,
                                             fingerprint=fingerprint)
    trainer = builders.build_trainer(spec, model, device=device, worker=worker,
                                     fingerprint=fingerprint,
                                     checkpoint_path=checkpoint_path, runtime=runtime)
    if worker.rank == 0:
        logger.info(
            "training %s (%d parameters) on %s%s, precision %s, %d train / %d val images, "
            "checkpoints in %s",
            spec.model_cfg.name, sum(p.numel() for p in model.parameters()), device,
            f" x {worker.world_size} processes" if worker.distributed else "",
            spec.train_cfg.precision, len(spec.train_ids), len(spec.val_ids),
            checkpoint_path.parent,
        )
    result = trainer.fit()
    bundle = builders.build_bundle(spec, result, fingerprint=fingerprint, worker=worker)
    return bundle, result.history
