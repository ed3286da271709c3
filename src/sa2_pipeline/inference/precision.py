"""Numeric precision of a forward pass: one name, resolved once, used by training and inference.

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
    callers that can measure make a CPU ``auto`` concrete first (:func:`concrete_precision`,
    :mod:`sa2_pipeline.engine.precision_probe`), so this fp32 is only the unmeasured answer.

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


def concrete_precision(precision: str, device: Any, model: Any = None,
                       tile_shape: tuple[int, ...] | None = None) -> str:
    """``auto`` on a CPU for ``model``'s forwards of ``tile_shape`` batches: the precision
    measured fastest there (once per machine and model, then cached:
    :mod:`sa2_pipeline.engine.precision_probe`). Anything else is returned unchanged
    (``auto`` on CUDA is resolved by :func:`resolve_precision`)."""
    if precision != "auto" or model is None or tile_shape is None or device.type != "cpu":
        return precision
    import torch

    from sa2_pipeline.engine.precision_probe import choose_for_inference

    weights = [p for p in model.parameters() if p.dim() == 4]
    channels_last = bool(weights) and weights[0].is_contiguous(
        memory_format=torch.channels_last)
    return choose_for_inference("auto", model, tuple(tile_shape), device,
                                channels_last=channels_last)
