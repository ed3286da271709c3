"""Numeric precision of a forward pass: one name, resolved once, used by training and inference.

What ``auto`` means on a CPU is measured, not assumed: :mod:`.precision_probe`.

``precision`` is always one of :data:`PRECISIONS` (the values of ``training.precision`` and
``evaluation.precision``). :func:`resolve_precision` turns it into an autocast dtype for a
device (``None`` = float32) and :func:`autocast` into the context a forward pass runs in.
The training loop, validation, evaluation and the registered model all go through here.
"""

from __future__ import annotations

import contextlib
from typing import Any

PRECISIONS = ("fp32", "bf16", "fp16", "auto")


def resolve_precision(precision: str, device: Any) -> Any:
    """The autocast dtype of ``precision`` on ``device`` (a ``torch.device``); ``None`` = fp32.

    ``auto`` picks bf16 on GPUs that support it, fp16 on older GPUs and fp32 on the CPU;
    callers that can measure make a CPU ``auto`` concrete first
    (:func:`sa2_pipeline.runtime.precision_probe.concrete_precision`), so this fp32 is
    only the unmeasured answer.

    Raises:
        ValueError: An unknown name, or fp16 on the CPU.
    """
    import torch

    if precision == "fp32":
        return None
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16}
    if precision not in dtypes:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("precision 'fp16' needs a CUDA device; use 'bf16' on the CPU")
    return dtypes[precision]


def autocast(device: Any, dtype: Any) -> contextlib.AbstractContextManager:
    """The autocast context for a dtype from :func:`resolve_precision`; a no-op for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device_type=device.type, dtype=dtype)
