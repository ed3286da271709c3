"""Process-wide kernel choices of the models' layers, like ``torch.backends`` flags.

Two choices change how a CPU training step computes its gradients (never what it
computes, up to float summation order); the precision probe measures them
(:mod:`sa2_pipeline.runtime.precision_probe`) and the layers of
:mod:`sa2_pipeline.models.layers` read them on every forward:

* ``weight-gradient layout`` (:func:`set_weight_grad_layout`): ``native`` or ``nchw``.
* ``depthwise backward`` (:func:`set_depthwise_backward`): ``conv`` or ``native``.

:func:`using` sets them for a block and restores the previous ones after it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["KERNEL_CHOICES", "depthwise_backward", "set_depthwise_backward",
           "set_weight_grad_layout", "using", "weight_grad_layout"]

#: name -> allowed values, the first being the default.
KERNEL_CHOICES = {"weight-gradient layout": ("native", "nchw"),
                  "depthwise backward": ("conv", "native")}
_current = {name: allowed[0] for name, allowed in KERNEL_CHOICES.items()}


def _set(name: str, value: str) -> None:
    allowed = KERNEL_CHOICES[name]
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    _current[name] = value


def set_weight_grad_layout(layout: str) -> None:
    """Where the layers' ``Conv2d`` computes its weight gradient for channels-last inputs.

    ``native``: in the tensors' own layout (oneDNN's channels-last kernel). ``nchw``: on
    NCHW copies of the input and output gradient. On AVX2-only CPUs oneDNN has no fast
    channels-last weight-gradient kernel for dense convolutions (``ONEDNN_VERBOSE``:
    ``jit:avx2`` on ``acdb``, 2-4x slower than its blocked-layout kernel, which NCHW
    tensors reach), so ``nchw`` is faster there despite the two copies; with AVX-512 the
    channels-last kernel (``brg_conv_bwd_w``) is fast and ``native`` wins. The training
    engine measures both (``precision: auto``, docs/measurements.md). Both give the same
    gradient up to float summation order.
    """
    _set("weight-gradient layout", layout)


def weight_grad_layout() -> str:
    """The current :func:`set_weight_grad_layout` choice (``native`` by default)."""
    return _current["weight-gradient layout"]


def set_depthwise_backward(mode: str) -> None:
    """How ``depthwise_conv2d`` computes its CPU backward: ``conv`` (the default, a
    depthwise forward convolution per image) or ``native`` (oneDNN's own depthwise
    backward, kept for comparison: ``benchmarks/bench_training.py --precision bf16
    bf16-native-dw``)."""
    _set("depthwise backward", mode)


def depthwise_backward() -> str:
    """The current :func:`set_depthwise_backward` choice (``conv`` by default)."""
    return _current["depthwise backward"]


@contextlib.contextmanager
def using(*, weight_grad_layout: str | None = None,
          depthwise_backward: str | None = None) -> Iterator[None]:
    """Set the given choices for the block; restore the previous ones after it."""
    before = dict(_current)
    try:
        if weight_grad_layout is not None:
            set_weight_grad_layout(weight_grad_layout)
        if depthwise_backward is not None:
            set_depthwise_backward(depthwise_backward)
        yield
    finally:
        _current.update(before)
