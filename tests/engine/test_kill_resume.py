"""A training process SIGKILLed at any moment resumes and ends exactly like an unkilled one.

The training runs in a child process (a script written to ``tmp_path``); the test kills it
with SIGKILL -- no exception handler, ``finally`` or ``atexit`` runs -- at a random moment
after a given epoch was checkpointed (so mid-epoch, during validation or during the next
checkpoint write), then starts the same command again and compares the final weights and
history with an uninterrupted run, bit for bit.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from sa2_pipeline.engine.checkpoint import load_checkpoint
from sa2_pipeline.io_utils import atomic_write_bytes

pytestmark = pytest.mark.skipif(os.name != "posix", reason="SIGKILL is POSIX")

# Epochs of a few milliseconds: enough of them that a kill aimed after epoch 3 cannot
# land after the run's end when the poll lags on a loaded machine (it once did with 6).
EPOCHS = 12
_TESTS_DIR = Path(__file__).resolve().parent

# Same toy data and model as test_trainer.py (imported from it), 12 epochs of 4 patches.
_SCRIPT = textwrap.dedent(
    f"""
    import sys

    import torch

    sys.path.insert(0, {str(_TESTS_DIR)!r})
    from test_trainer import MODEL, _toy_data

    from sa2_pipeline.config import TrainingConfig, parse
    from sa2_pipeline.engine.fit import fit_segmentation_model

    checkpoint_dir, out = sys.argv[1], sys.argv[2]
    cfg = parse(TrainingConfig, {{
        "epochs": {EPOCHS}, "batch_size": 2, "patch_size": 32, "samples_per_epoch": 4,
        "num_threads": 1, "checkpoint_dir": checkpoint_dir, "seed": 3, "device": "cpu",
        "augmentation": {{"name": "default"}},
    }}, "training")
    train_images, train_masks = _toy_data(4, seed=1)
    val_images, val_masks = _toy_data(2, seed=2)
    bundle, history = fit_segmentation_model(
        train_images, train_masks, val_images, val_masks, MODEL, cfg, eval_patch_size=64,
    )
    torch.save({{"state_dict": bundle["state_dict"], "history": history,
                "metadata": bundle["metadata"]}}, out)
    """
)


def _command(tmp_path: Path, workdir: Path) -> list[str]:
    script = tmp_path / "train_script.py"
    if not script.exists():
        script.write_text(_SCRIPT)
    return [sys.executable, str(script), str(workdir / "ckpt"), str(workdir / "result.pt")]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "KEDRO_DISABLE_TELEMETRY": "1",
            "NO_ALBUMENTATIONS_UPDATE": "1"}


def _run_to_completion(tmp_path: Path, workdir: Path) -> dict:
    proc = subprocess.run(_command(tmp_path, workdir), env=_env(), capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return torch.load(workdir / "result.pt", weights_only=False)


def _checkpoint_epoch(path: Path) -> int:
    try:
        return int(load_checkpoint(path)["epoch"]) if path.exists() else 0
    except ValueError:  # cannot happen with atomic writes; treat as "not yet"
        return 0


def _kill_after_epoch(tmp_path: Path, workdir: Path, epoch: int, rng: random.Random) -> float:
    """Start training, SIGKILL it at a random moment after ``epoch`` was checkpointed."""
    proc = subprocess.Popen(_command(tmp_path, workdir), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    try:
        last_seen, seen_at, epoch_time = None, None, 0.0
        while True:
            assert proc.poll() is None, (
                f"training ended before the kill (rc {proc.returncode}): "
                f"{proc.stderr.read().decode()[-3000:]}"
            )
            assert time.monotonic() < deadline, "no checkpoint appeared in time"
            ckpt = next((workdir / "ckpt").rglob("last.pt"), None)
            stamp = ckpt.stat().st_mtime_ns if ckpt is not None and ckpt.exists() else None
            if stamp is not None and stamp != last_seen:
                now = time.monotonic()
                epoch_time = now - seen_at if seen_at is not None else epoch_time
                last_seen, seen_at = stamp, now
                if _checkpoint_epoch(ckpt) >= epoch:
                    break
            time.sleep(0.01)
        # Somewhere in the next epoch: training, validation or the checkpoint write.
        delay = rng.uniform(0.0, min(0.3, 0.9 * epoch_time))
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (workdir / "result.pt").exists()
    return delay


def _strip_times(history):
    return [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in history]


def _assert_same_result(reference: dict, resumed: dict) -> None:
    assert _strip_times(resumed["history"]) == _strip_times(reference["history"])
    assert resumed["state_dict"].keys() == reference["state_dict"].keys()
    for key, value in reference["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key


def _assert_only_the_checkpoint_is_left(workdir: Path) -> None:
    leftovers = sorted(
        str(p.relative_to(workdir / "ckpt")) for p in (workdir / "ckpt").rglob("*")
        if p.is_file() and not p.name.endswith(".lock")  # the run's lock is kept by design
    )
    assert len(leftovers) == 1, leftovers
    assert leftovers[0].endswith("/last.pt"), leftovers


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """The uninterrupted run (shared by the kill tests)."""
    tmp = tmp_path_factory.mktemp("uninterrupted")
    result = _run_to_completion(tmp, tmp / "run")
    assert len(result["history"]) == EPOCHS
    assert result["metadata"]["resumed_from_epoch"] == 0
    return result


def test_run_killed_mid_training_resumes_to_the_identical_result(tmp_path, reference):
    rng = random.Random()
    workdir = tmp_path / "killed"
    delay = _kill_after_epoch(tmp_path, workdir, epoch=2, rng=rng)
    run_folder = next(p for p in (workdir / "ckpt").iterdir() if p.is_dir())  # not the lock
    killed_at = _checkpoint_epoch(run_folder / "last.pt")
    assert 2 <= killed_at < EPOCHS, f"killed {delay:.3f} s after epoch 2"
    # A write torn by a kill leaves its temporary file; plant one for certain.
    torn = run_folder / f".last.pt.{_dead_pid()}-torn.tmp"
    torn.write_bytes(b"half a checkpoint")

    resumed = _run_to_completion(tmp_path, workdir)

    assert resumed["metadata"]["resumed_from_epoch"] == killed_at
    _assert_same_result(reference, resumed)
    _assert_only_the_checkpoint_is_left(workdir)


def test_run_killed_twice_still_ends_identically(tmp_path, reference):
    rng = random.Random()
    workdir = tmp_path / "killed-twice"
    _kill_after_epoch(tmp_path, workdir, epoch=1, rng=rng)
    first = _checkpoint_epoch(next((workdir / "ckpt").rglob("last.pt")))
    _kill_after_epoch(tmp_path, workdir, epoch=max(3, first + 1), rng=rng)
    second = _checkpoint_epoch(next((workdir / "ckpt").rglob("last.pt")))
    assert 1 <= first < second < EPOCHS

    resumed = _run_to_completion(tmp_path, workdir)

    assert resumed["metadata"]["resumed_from_epoch"] == second
    _assert_same_result(reference, resumed)
    _assert_only_the_checkpoint_is_left(workdir)


def test_atomic_write_removes_temporaries_of_dead_writers_only(tmp_path):
    target = tmp_path / "last.pt"
    dead = tmp_path / f".last.pt.{_dead_pid()}-abc.tmp"
    alive = tmp_path / f".last.pt.{os.getppid()}-def.tmp"  # a live concurrent writer
    other = tmp_path / f".other.pt.{_dead_pid()}-ghi.tmp"  # another file's temporary
    for path in (dead, alive, other):
        path.write_bytes(b"partial")

    atomic_write_bytes(target, b"complete")

    assert target.read_bytes() == b"complete"
    assert not dead.exists()
    assert alive.exists() and other.exists()
