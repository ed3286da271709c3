"""The training engine: resume equivalence, selection on validation, early stopping."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sa2_pipeline.config import ModelConfig, TrainingConfig, parse
from sa2_pipeline.engine.callbacks import Callback
from sa2_pipeline.engine.checkpoint import load_checkpoint, save_atomic
from sa2_pipeline.engine.fingerprint import run_fingerprint
from sa2_pipeline.engine.fit import fit_segmentation_model
from sa2_pipeline.engine.optim import EpochScheduler
from sa2_pipeline.runtime.devices import select_device
from sa2_pipeline.runtime.precision import resolve_precision


def _toy_data(n: int, size: int = 40, seed: int = 0):
    """Bright discs on a dark noisy background: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    images, masks = {}, {}
    yy, xx = np.mgrid[:size, :size]
    for k in range(n):
        mask = np.zeros((size, size), np.uint8)
        for _ in range(3):
            cy, cx, r = rng.integers(6, size - 6), rng.integers(6, size - 6), rng.integers(3, 6)
            mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
        image = rng.normal(60, 15, (size, size, 3)) + mask[..., None] * 120
        images[f"img{k}"] = np.clip(image, 0, 255).astype(np.uint8)
        masks[f"img{k}"] = mask
    return images, masks


MODEL = ModelConfig(name="sa2net", base_channels=4)


def _train_cfg(tmp_path, **overrides) -> TrainingConfig:
    base = {
        "epochs": 3, "batch_size": 2, "patch_size": 32, "samples_per_epoch": 4,
        "num_threads": 1, "checkpoint_dir": str(tmp_path / "ckpt"), "seed": 3,
        "augmentation": {"name": "default"},
    }
    base.update(overrides)
    return parse(TrainingConfig, base, "training")


def _fit(tmp_path, cfg, callbacks=(), model=MODEL):
    train_images, train_masks = _toy_data(4, seed=1)
    val_images, val_masks = _toy_data(2, seed=2)
    return fit_segmentation_model(
        train_images, train_masks, val_images, val_masks, model, cfg,
        eval_patch_size=64, callbacks=callbacks,
    )


class _CrashAfter(Callback):
    """Simulates a kill right after epoch ``n`` was checkpointed."""

    def __init__(self, n: int) -> None:
        self.n = n

    def on_epoch_end(self, trainer, record) -> None:
        if record["epoch"] == self.n:
            raise KeyboardInterrupt(f"simulated kill after epoch {self.n}")


def _strip_times(history):
    return [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in history]


def test_resumed_run_ends_exactly_like_an_uninterrupted_one(tmp_path):
    full_bundle, full_history = _fit(tmp_path / "a", _train_cfg(tmp_path / "a"))

    cfg_b = _train_cfg(tmp_path / "b")
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path / "b", cfg_b, callbacks=[_CrashAfter(2)])
    checkpoints = list((tmp_path / "b" / "ckpt").rglob("last.pt"))
    assert len(checkpoints) == 1
    assert load_checkpoint(checkpoints[0])["epoch"] == 2

    resumed_bundle, resumed_history = _fit(tmp_path / "b", cfg_b)
    assert resumed_bundle["metadata"]["resumed_from_epoch"] == 2
    assert _strip_times(resumed_history) == _strip_times(full_history)
    for key, value in full_bundle["state_dict"].items():
        assert torch.equal(value, resumed_bundle["state_dict"][key]), key


def test_checkpoint_of_a_different_run_is_not_resumed(tmp_path):
    cfg = _train_cfg(tmp_path, epochs=1)
    _fit(tmp_path, cfg)
    # Same checkpoint folder, different seed: another run, trained from scratch.
    other = _train_cfg(tmp_path, epochs=1, seed=4)
    bundle, history = _fit(tmp_path, other)
    assert bundle["metadata"]["resumed_from_epoch"] == 0
    assert len(history) == 1


def test_fingerprint_changes_with_settings_and_data_but_not_runtime_knobs(tmp_path):
    images, masks = _toy_data(2)
    cfg = _train_cfg(tmp_path)
    fp = run_fingerprint(MODEL, cfg, images, masks, images)
    assert fp == run_fingerprint(MODEL, _train_cfg(tmp_path, num_workers=2, num_threads=2),
                                 images, masks, images)
    assert fp != run_fingerprint(MODEL, _train_cfg(tmp_path, lr=0.01), images, masks, images)
    changed = {k: v.copy() for k, v in images.items()}
    changed["img0"][0, 0, 0] ^= 1
    assert fp != run_fingerprint(MODEL, cfg, changed, masks, changed)


def test_training_learns_and_selects_the_best_validation_epoch(tmp_path):
    cfg = _train_cfg(tmp_path, epochs=6, samples_per_epoch=8, resume=False)
    bundle, history = _fit(tmp_path, cfg)
    dices = [r["val_dice"] for r in history]
    meta = bundle["metadata"]
    assert meta["best_epoch"] == int(np.argmax(dices)) + 1
    assert meta["best_val_dice"] == pytest.approx(max(dices))
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert sum(r["is_best"] for r in history) >= 1


def test_early_stopping_and_selection_window(tmp_path):
    # lr 0: the weights never change, so validation Dice never improves after the
    # first eligible epoch and patience 2 stops the run two epochs later.
    cfg = _train_cfg(tmp_path, epochs=10, lr=0.0, early_stopping_patience=2,
                     select_after_epoch=1, resume=False,
                     scheduler={"name": "constant"})
    bundle, history = _fit(tmp_path, cfg)
    assert len(history) == 4
    assert bundle["metadata"]["stopped_early"] is True
    assert bundle["metadata"]["best_epoch"] == 2  # epoch 1 is not eligible
    assert not history[0]["is_best"]


def test_unet_trains_through_the_same_engine(tmp_path):
    cfg = _train_cfg(tmp_path, epochs=1, resume=False)
    model = ModelConfig(name="unet", base_channels=4, deep_supervision=False)
    bundle, history = _fit(tmp_path, cfg, model=model)
    assert bundle["model_name"] == "unet"
    assert len(history) == 1


def test_release_learning_rate_schedule():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([param], lr=1e-3)
    sched = EpochScheduler(opt, TrainingConfig().scheduler)
    lrs = []
    for _ in range(6):
        lrs.append(sched.lr)
        sched.step_epoch()
    assert lrs == pytest.approx([1e-3, 9.14e-4, 6.89e-4, 4.11e-4, 1.86e-4, 1e-3], abs=5e-7)


def test_save_atomic_leaves_no_temporary_files(tmp_path):
    path = save_atomic({"a": torch.ones(2)}, tmp_path / "x" / "last.pt")
    assert torch.equal(load_checkpoint(path)["a"], torch.ones(2))
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]


def test_corrupt_checkpoint_error_names_the_file(tmp_path):
    bad = tmp_path / "last.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="last.pt"):
        load_checkpoint(bad)


def test_precision_and_device_validation():
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) is None
    assert resolve_precision("auto", cpu) is None
    assert resolve_precision("bf16", cpu) is torch.bfloat16
    with pytest.raises(ValueError, match="fp16"):
        resolve_precision("fp16", cpu)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="cuda"):
            select_device("cuda")
    assert select_device("cpu") == cpu


def test_bf16_training_step_runs_on_cpu(tmp_path):
    cfg = _train_cfg(tmp_path, epochs=1, precision="bf16", resume=False)
    bundle, history = _fit(tmp_path, cfg)
    assert np.isfinite(history[0]["train_loss"])
    assert all(v.dtype != torch.bfloat16 for v in bundle["state_dict"].values())


def test_validation_masks_enter_the_fingerprint(tmp_path):
    # They choose the best epoch: a checkpoint selected against other masks is not resumed.
    images, masks = _toy_data(2)
    cfg = _train_cfg(tmp_path)
    fp = run_fingerprint(MODEL, cfg, images, masks, images, val_masks=masks)
    other = {k: 1 - v for k, v in masks.items()}
    assert fp != run_fingerprint(MODEL, cfg, images, masks, images, val_masks=other)
    assert fp == run_fingerprint(MODEL, cfg, images, masks, images, val_masks=masks)


def _pin_runtime(monkeypatch, variant: str) -> None:
    """Make the engine's precision/layout measurement answer ``variant``."""
    from sa2_pipeline.runtime import precision_probe as probe

    def choose_for_training(requested, *args, **kwargs):
        choice = probe.RuntimeChoice.of(variant)
        probe.apply(choice)
        return choice

    monkeypatch.setattr(probe, "choose_for_training", choose_for_training)


def test_resume_keeps_the_weight_gradient_layout_its_checkpoint_was_trained_with(
    tmp_path, monkeypatch
):
    # The layout is measured (and cached) per machine; the cache can say something else
    # by the time a killed run resumes (another run measured meanwhile). The resumed run
    # must still finish bit-identical to the run that was never stopped.
    from sa2_pipeline.runtime import kernels

    try:
        _pin_runtime(monkeypatch, "fp32")
        full_bundle, full_history = _fit(tmp_path / "a", _train_cfg(tmp_path / "a"))
        cfg_b = _train_cfg(tmp_path / "b")
        with pytest.raises(KeyboardInterrupt):
            _fit(tmp_path / "b", cfg_b, callbacks=[_CrashAfter(1)])

        _pin_runtime(monkeypatch, "fp32-nchw-wgrad")
        resumed_bundle, resumed_history = _fit(tmp_path / "b", cfg_b)
        assert resumed_bundle["metadata"]["resumed_from_epoch"] == 1
        assert _strip_times(resumed_history) == _strip_times(full_history)
        for key, value in full_bundle["state_dict"].items():
            assert torch.equal(value, resumed_bundle["state_dict"][key]), key

        # The layout does change the last bits here, so the check above can fail.
        _, nchw_history = _fit(tmp_path / "c", _train_cfg(tmp_path / "c"))
        assert _strip_times(nchw_history) != _strip_times(full_history)
    finally:
        kernels.set_weight_grad_layout("native")
