"""Device, precision, thread and random-state helpers for the training engine."""

from __future__ import annotations

import contextlib
import logging
import os
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def select_device(requested: str = "auto") -> torch.device:
    """Return CUDA when it is present (or asked for), else the CPU.

    Raises:
        ValueError: ``requested == "cuda"`` on a machine without a usable CUDA device.
    """
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but torch.cuda.is_available() is False")
    if requested not in ("cpu", "cuda"):
        raise ValueError(f"device must be one of auto, cpu, cuda; got {requested!r}")
    return torch.device(requested)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """Map the ``precision`` parameter to an autocast dtype (``None`` = float32).

    ``auto`` picks bf16 on GPUs that support it, fp16 on older GPUs and fp32 on the CPU.
    """
    if precision == "fp32":
        return None
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision not in _DTYPES:
        raise ValueError(f"precision must be one of fp32, bf16, fp16, auto; got {precision!r}")
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("precision 'fp16' needs a CUDA device; use 'bf16' on the CPU")
    return _DTYPES[precision]


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Autocast context for ``dtype``; a no-op context for float32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def configure_threads(num_threads: int) -> None:
    """Set torch's intra-op threads (0 keeps torch's default)."""
    if num_threads > 0 and torch.get_num_threads() != num_threads:
        torch.set_num_threads(num_threads)
        logger.info("torch uses %d thread(s)", num_threads)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def get_rng_state() -> dict[str, Any]:
    """Every random state a resumed run needs to continue identically."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` captured."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def temporarily_eval(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Put ``model`` in eval mode and restore its previous mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def worker_init(worker_id: int) -> None:  # noqa: ARG001 - DataLoader signature
    """DataLoader workers use one torch/OpenCV thread so they never fight the main process."""
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:  # pragma: no cover
        pass
