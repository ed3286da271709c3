"""``precision: auto``: the fastest correct precision of *this* model on *this* machine.

Which precision is fastest on a CPU depends on the CPU, not on a rule: bf16 autocast is
~1.6x faster than fp32 on a Zen 4 EPYC (native ``avx512_bf16``), 1.6x *slower* on a
Xeon whose bf16 dot product issues at half the fp32 FMA rate, and ~3x slower on an
AVX2-only CPU, where oneDNN converts in software (docs/measurements.md). So on the CPU
``auto`` measures: a few steps of the real model's workload (a training step for
training, a forward for inference) in each candidate **variant**, alternating so that a
busy machine slows all alike, and keeps the first (fp32) unless another's fastest step is
faster by more than a margin.

A variant is a precision plus a kernel choice: for a channels-last training step,
``fp32-nchw-wgrad`` computes the dense convolutions' weight gradients on NCHW copies
(:func:`sa2_pipeline.models.layers.set_weight_grad_layout`), 2-4x faster on AVX2-only
CPUs and slower with AVX-512. It is the same arithmetic summed in another order, so the
gradients agree to rounding (not bit for bit). That choice is measured the same way
whenever a CPU training step runs in fp32, also when ``fp32`` is asked for; a resumed
run keeps the choice stored in its checkpoint, so resuming stays bit-identical
(:func:`sa2_pipeline.engine.builders.resolve_runtime`).

The answer is cached per CPU (model name, family/model/stepping and flags), torch version,
workload, thread count, candidates and model shape, one small JSON file per key under
:func:`cache_dir`, written atomically, so the measurement runs once per machine and model.

On CUDA nothing is measured: ``auto`` is bf16 where the GPU supports it, else fp16 (the
training loop then scales gradients).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sa2_pipeline.io_utils import atomic_write_text
from sa2_pipeline.runtime import kernels
from sa2_pipeline.runtime.precision import autocast, resolve_precision

logger = logging.getLogger(__name__)

#: Variant name -> (precision, weight-gradient layout of the dense convolutions).
VARIANTS = {
    "fp32": ("fp32", "native"),
    "fp32-nchw-wgrad": ("fp32", "nchw"),
    "bf16": ("bf16", "native"),
}
#: A candidate must beat the first candidate's median step by this fraction to be chosen.
MARGIN = 0.05
#: A candidate whose first timed step is this many times the best so far stops early.
GIVE_UP_RATIO = 2.0
#: A candidate whose warm-up step is this many times the fastest warm-up stops there.
WARMUP_GIVE_UP_RATIO = 4.0


@dataclass(frozen=True)
class RuntimeChoice:
    """What a run uses: ``precision`` (fp32/bf16/fp16), the dense convolutions' weight-
    gradient layout (``native``/``nchw``) and the variant's name."""

    precision: str
    weight_grad_layout: str = "native"
    variant: str = ""

    @classmethod
    def of(cls, variant: str) -> RuntimeChoice:
        precision, layout = VARIANTS[variant]
        return cls(precision, layout, variant)


def cache_dir() -> Path:
    """``$SA2_CACHE_DIR``, else ``$XDG_CACHE_HOME/sa2-pipeline``, else ``~/.cache/sa2-pipeline``."""
    if os.environ.get("SA2_CACHE_DIR"):
        return Path(os.environ["SA2_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "sa2-pipeline"


def cpuinfo_fields(cpuinfo: str | None = None) -> dict[str, str]:
    """The first CPU's ``name: value`` fields of /proc/cpuinfo (or of ``cpuinfo``): ``model
    name``, ``cpu family``, ``model``, ``stepping``, ``flags``...; empty where there is none."""
    try:
        text = Path("/proc/cpuinfo").read_text() if cpuinfo is None else cpuinfo
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() and fields:  # the end of the first processor's block
            break
        name, sep, value = line.partition(":")
        if sep:
            fields.setdefault(name.strip(), value.strip())
    return fields


def machine_key(cpuinfo: str | None = None) -> dict[str, str]:
    """CPU model name, family/model/stepping, the flags that decide oneDNN's kernels, torch
    version. The family and model matter: "AMD EPYC" names a Zen 3, a Zen 4 and a Zen 5
    alike, whose fastest precisions differ, and a home directory shared by a cluster's
    mixed nodes must not hand one generation's answer to another."""
    import platform

    import torch

    fields = cpuinfo_fields(cpuinfo)
    flags = set(fields.get("flags", "").split())
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16")
    generation = "/".join(fields.get(k, "?") for k in ("cpu family", "model", "stepping"))
    return {"cpu": fields.get("model name") or platform.processor() or platform.machine(),
            "cpu_generation": generation,
            "cpu_flags": ",".join(f for f in wanted if f in flags),
            "torch": torch.__version__}


def model_shape(model: Any, input_shape: tuple[int, ...], channels_last: bool) -> dict[str, Any]:
    """What the step's cost depends on: class, every parameter's shape, input, layout."""
    shapes = [tuple(p.shape) for p in model.parameters()]
    digest = hashlib.sha256(repr(shapes).encode()).hexdigest()[:16]
    return {"model": type(model).__name__, "parameters": sum(_numel(s) for s in shapes),
            "parameter_shapes": digest, "input": list(input_shape),
            "channels_last": bool(channels_last)}


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def candidates(requested: str, channels_last: bool, workload: str) -> tuple[str, ...]:
    """The variants worth measuring on a CPU for ``requested`` (one = nothing to measure)."""
    layouts = workload == "train" and channels_last
    if requested == "auto":
        return ("fp32", "fp32-nchw-wgrad", "bf16") if layouts else ("fp32", "bf16")
    if requested == "fp32" and layouts:
        return ("fp32", "fp32-nchw-wgrad")
    return (requested,)


def cache_file(key: Mapping[str, Any], folder: Path | None = None) -> Path:
    """The cache file of ``key`` (one file per key: writers never merge)."""
    text = json.dumps(dict(key), sort_keys=True)
    name = f"precision-{hashlib.sha256(text.encode()).hexdigest()[:20]}.json"
    return (cache_dir() if folder is None else Path(folder)) / name


def read_cached(key: Mapping[str, Any], folder: Path | None = None) -> str | None:
    """The cached variant for ``key``; None when missing, unreadable or for another key."""
    path = cache_file(key, folder)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("key") != json.loads(json.dumps(dict(key))):
        return None
    variant = record.get("choice")
    return variant if variant in key.get("candidates", VARIANTS) else None


def write_cached(key: Mapping[str, Any], variant: str, timings: Mapping[str, list[float]],
                 folder: Path | None = None) -> Path | None:
    """Store a choice atomically; a read-only or full cache only logs a warning."""

    path = cache_file(key, folder)
    record = {"key": dict(key), "choice": variant,
              "fastest_step_s": {k: round(min(v), 5) for k, v in timings.items()},
              "median_step_s": {k: round(statistics.median(v), 5) for k, v in timings.items()},
              "step_s": {k: [round(t, 5) for t in v] for k, v in timings.items()},
              "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    except OSError as err:
        logger.warning("precision auto: could not cache the choice in %s (%s)", path, err)
        return None


def measure(time_step: Callable[[str], float], variants: tuple[str, ...],
            rounds: int = 3, warmup: int = 1) -> dict[str, list[float]]:
    """Step times per variant, measured round-robin (``time_step(v)`` runs one step of
    variant ``v`` and returns its seconds). A variant that raises is left out. One whose
    warm-up step takes over :data:`WARMUP_GIVE_UP_RATIO` times the fastest warm-up, or
    whose first timed step over :data:`GIVE_UP_RATIO` times the best so far, stops there
    (its one step is kept as its time): a clear loser costs one or two steps, not many."""
    times: dict[str, list[float]] = {}
    first: dict[str, float] = {}
    alive = list(variants)
    for round_ in range(warmup + rounds):
        for variant in list(alive):
            try:
                seconds = time_step(variant)
            except (RuntimeError, NotImplementedError) as err:
                logger.info("precision auto: %s failed on this machine (%s)", variant, err)
                alive.remove(variant)
                continue
            if round_ < warmup:
                first.setdefault(variant, seconds)
                continue
            times.setdefault(variant, []).append(seconds)
            best = min(min(v) for v in times.values())
            if round_ == warmup and seconds > GIVE_UP_RATIO * best:
                alive.remove(variant)
        if round_ == warmup - 1 and first:
            fastest_warmup = min(first.values())
            for variant in list(alive):
                if first.get(variant, 0.0) > WARMUP_GIVE_UP_RATIO * fastest_warmup:
                    alive.remove(variant)
                    times[variant] = [first[variant]]
    if not times:
        raise RuntimeError("precision auto: no candidate could run a step")
    return times


def fastest(times: Mapping[str, list[float]], default: str = "fp32",
            margin: float = MARGIN) -> str:
    """``default`` unless another variant's fastest step beats its fastest by more than
    ``margin``. The fastest, not the median: other work on the machine only ever adds time,
    and a slowdown that lands on two of three rounds moves the medians (a Zen 4 run measured
    fp32 0.659/0.817/0.802 s against 0.681/0.874/0.754 s for NCHW weight gradients: the
    medians picked NCHW, whose step is the slower one, 0.650 s against 0.608 s, in a
    quiet measurement)."""
    best_times = {k: min(v) for k, v in times.items() if v}
    best = min(best_times, key=best_times.get)
    if default not in best_times:
        return best
    return best if best_times[best] < (1 - margin) * best_times[default] else default


def choose(requested: str, device: Any, key: Mapping[str, Any] | None = None,
           time_step: Callable[[str], float] | None = None, *, folder: Path | None = None,
           channels_last: bool = False, workload: str = "train",
           rounds: int = 3) -> RuntimeChoice:
    """What ``requested`` (``training.precision``, ``evaluation.precision``, the pyfunc's
    ``precision``) means here: a :class:`RuntimeChoice`.

    Args:
        requested: ``fp32``, ``bf16``, ``fp16`` or ``auto``.
        device: The ``torch.device`` the work runs on.
        key: What the answer depends on besides the machine (:func:`probe_key`).
        time_step: Runs one step of a variant and returns its seconds
            (:func:`training_step_timer`, :func:`forward_timer`). None on a cache miss
            means the first candidate (nothing to measure with).
        folder: Cache folder (default :func:`cache_dir`).
        channels_last / workload: Which variants apply (:func:`candidates`).
    """
    if device.type == "cuda":
        if requested != "auto":
            return RuntimeChoice(requested, "native", requested)
        import torch

        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return RuntimeChoice(precision, "native", precision)
    variants = candidates(requested, channels_last, workload)
    if len(variants) == 1:
        return RuntimeChoice.of(variants[0]) if variants[0] in VARIANTS else RuntimeChoice(
            variants[0], "native", variants[0])
    full_key = {**machine_key(), **dict(key or {}), "candidates": list(variants)}
    cached = read_cached(full_key, folder)
    if cached is not None:
        logger.info("precision %s: %s (cached for this CPU and model)", requested, cached)
        return RuntimeChoice.of(cached)
    if time_step is None:
        return RuntimeChoice.of(variants[0])
    times = measure(time_step, variants, rounds=rounds)
    choice = fastest(times, default=variants[0])
    measured = ", ".join(f"{k} {min(v):.3f} s" for k, v in times.items())
    logger.info("precision %s: measured %s (fastest step); using %s", requested, measured,
                choice)
    write_cached(full_key, choice, times, folder)
    return RuntimeChoice.of(choice)


# --------------------------------------------------------------------------------------
# What is timed: the real model's step, on a copy, on random data
# --------------------------------------------------------------------------------------
def _random_batch(input_shape: tuple[int, ...], num_classes: int, device: Any,
                  channels_last: bool):
    import torch

    n, _, h, w = input_shape
    x = torch.rand(*input_shape, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    if num_classes == 1:
        y = (torch.rand(n, 1, h, w, device=device) > 0.7).float()
    else:
        y = torch.randint(0, num_classes, (n, h, w), device=device)
    return x, y


def training_step_timer(model: Any, loss_fn: Callable, input_shape: tuple[int, ...],
                        num_classes: int, device: Any,
                        channels_last: bool = False) -> Callable[[str], float]:
    """``time_step(variant)``: one training step (forward, loss, backward, Adam) of a
    *copy* of ``model`` on random data. The model, its optimiser, every random state of
    the caller and the weight-gradient layout are left as they were."""
    import copy

    import torch

    probe = copy.deepcopy(model).train()
    optimizer = torch.optim.Adam([p for p in probe.parameters() if p.requires_grad], lr=1e-6)
    with torch.random.fork_rng(devices=[]):
        x, y = _random_batch(input_shape, num_classes, device, channels_last)

    def time_step(variant: str) -> float:
        precision, layout = VARIANTS[variant]
        previous = kernels.weight_grad_layout()
        kernels.set_weight_grad_layout(layout)
        try:
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            with autocast(device, resolve_precision(precision, device)):
                out = probe(x)
            out = (tuple(o.float() for o in out) if isinstance(out, (tuple, list))
                   else out.float())
            loss_fn(out, y).backward()
            optimizer.step()
            return time.perf_counter() - start
        finally:
            kernels.set_weight_grad_layout(previous)

    return time_step


def forward_timer(model: Any, input_shape: tuple[int, ...], device: Any,
                  channels_last: bool = False) -> Callable[[str], float]:
    """``time_step(variant)``: one inference forward of ``model`` (eval mode, no grad) on
    random tiles; the model's mode is restored afterwards."""
    import torch

    with torch.random.fork_rng(devices=[]):
        x, _ = _random_batch(input_shape, 1, device, channels_last)

    def time_step(variant: str) -> float:
        precision = VARIANTS[variant][0]
        was_training = model.training
        model.eval()
        try:
            start = time.perf_counter()
            with torch.inference_mode(), autocast(device, resolve_precision(precision, device)):
                model(x)
            return time.perf_counter() - start
        finally:
            model.train(was_training)

    return time_step


def probe_key(model: Any, input_shape: tuple[int, ...], workload: str,
              channels_last: bool = False) -> dict[str, Any]:
    """The cache key's non-machine part: model shape, workload and thread count."""
    import torch

    return {**model_shape(model, input_shape, channels_last), "workload": workload,
            "threads": torch.get_num_threads()}


def _lazy(factory: Callable[[], Callable[[str], float]]) -> Callable[[str], float]:
    """A ``time_step`` that builds the real one (a model copy, data) on its first call."""
    built: list[Callable[[str], float]] = []

    def time_step(variant: str) -> float:
        if not built:
            built.append(factory())
        return built[0](variant)

    return time_step


def choose_for_training(requested: str, model: Any, loss_fn: Callable,
                        input_shape: tuple[int, ...], num_classes: int, device: Any, *,
                        channels_last: bool = False,
                        folder: Path | None = None) -> RuntimeChoice:
    """:func:`choose` for a training step of ``model`` on ``input_shape`` batches, and
    apply its weight-gradient layout (process-wide). Measures on a copy, once per key."""
    key = probe_key(model, input_shape, "train", channels_last)
    timer = _lazy(lambda: training_step_timer(model, loss_fn, input_shape, num_classes,
                                              device, channels_last))
    choice = choose(requested, device, key, timer, folder=folder,
                    channels_last=channels_last, workload="train")
    apply(choice)
    return choice


def apply(choice: RuntimeChoice) -> None:
    """Make ``choice``'s weight-gradient layout the process's (models.layers)."""
    kernels.set_weight_grad_layout(choice.weight_grad_layout)


def choose_for_inference(requested: str, model: Any, input_shape: tuple[int, ...],
                         device: Any, *, channels_last: bool = False,
                         folder: Path | None = None) -> str:
    """The concrete precision of ``requested`` for forwards of ``input_shape`` tiles."""
    key = probe_key(model, input_shape, "infer", channels_last)
    timer = _lazy(lambda: forward_timer(model, input_shape, device, channels_last))
    return choose(requested, device, key, timer, folder=folder, channels_last=channels_last,
                  workload="infer").precision


def concrete_precision(precision: str, device: Any, model: Any = None,
                       tile_shape: tuple[int, ...] | None = None) -> str:
    """``auto`` on a CPU for ``model``'s forwards of ``tile_shape`` batches: the precision
    measured fastest there (once per machine and model, then cached:
    this module). Anything else is returned unchanged
    (``auto`` on CUDA is resolved by :func:`~.precision.resolve_precision`)."""
    if precision != "auto" or model is None or tile_shape is None or device.type != "cpu":
        return precision
    import torch

    weights = [p for p in model.parameters() if p.dim() == 4]
    channels_last = bool(weights) and weights[0].is_contiguous(
        memory_format=torch.channels_last)
    return choose_for_inference("auto", model, tuple(tile_shape), device,
                                channels_last=channels_last)
