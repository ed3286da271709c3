"""``precision: auto``: the fastest correct precision of *this* model on *this* machine.

Which precision is fastest on a CPU depends on the CPU, not on a rule: bf16 autocast is
~1.6x faster than fp32 on a Zen 4 EPYC (native ``avx512_bf16``), 1.6x *slower* on a
Xeon whose bf16 dot product issues at half the fp32 FMA rate, and much slower still on a
CPU without bf16 instructions, where oneDNN converts in software (docs/measurements.md).
So on the CPU ``auto`` measures: a few steps of the real model's workload (a training step
for training, a forward for inference) in fp32 and bf16, alternating so that a busy machine
slows both alike, and keeps fp32 unless bf16 is faster by more than a margin. The answer is
cached per CPU (model name and flags), torch version, workload, thread count and model
shape, one small JSON file per key under :func:`cache_dir`, written atomically, so the
measurement runs once per machine and model.

On CUDA nothing is measured: bf16 where the GPU supports it, else fp16 (the training loop
then scales gradients).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: Precisions ``auto`` chooses between on a CPU, the default first.
CPU_CANDIDATES = ("fp32", "bf16")
#: A candidate must beat fp32's median step by this fraction to be chosen (ties keep fp32).
MARGIN = 0.05
#: A candidate whose first timed step is this many times the best so far stops early.
GIVE_UP_RATIO = 2.0


def cache_dir() -> Path:
    """``$SA2_CACHE_DIR``, else ``$XDG_CACHE_HOME/sa2-pipeline``, else ``~/.cache/sa2-pipeline``."""
    if os.environ.get("SA2_CACHE_DIR"):
        return Path(os.environ["SA2_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "sa2-pipeline"


def machine_key() -> dict[str, str]:
    """CPU model name, the flags that decide oneDNN's low-precision kernels, torch version."""
    import platform

    import torch

    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() == "model name":
                model = value.strip()
            elif name.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16")
    return {"cpu": model, "cpu_flags": ",".join(f for f in wanted if f in flags),
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


def cache_file(key: Mapping[str, Any], folder: Path | None = None) -> Path:
    """The cache file of ``key`` (one file per key: writers never merge)."""
    text = json.dumps(dict(key), sort_keys=True)
    name = f"precision-{hashlib.sha256(text.encode()).hexdigest()[:20]}.json"
    return (cache_dir() if folder is None else Path(folder)) / name


def read_cached(key: Mapping[str, Any], folder: Path | None = None) -> str | None:
    """The cached choice for ``key``, None when missing, unreadable or for another key."""
    path = cache_file(key, folder)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if record.get("key") != json.loads(json.dumps(dict(key))):
        return None
    precision = record.get("precision")
    return precision if precision in CPU_CANDIDATES else None


def write_cached(key: Mapping[str, Any], precision: str, timings: Mapping[str, list[float]],
                 folder: Path | None = None) -> Path | None:
    """Store a choice atomically; a read-only or full cache only logs a warning."""
    from sa2_pipeline.io_utils import atomic_write_text

    path = cache_file(key, folder)
    record = {"key": dict(key), "precision": precision,
              "median_step_s": {k: round(statistics.median(v), 5) for k, v in timings.items()},
              "step_s": {k: [round(t, 5) for t in v] for k, v in timings.items()},
              "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    except OSError as err:
        logger.warning("precision auto: could not cache the choice in %s (%s)", path, err)
        return None


def measure(time_step: Callable[[str], float], candidates: tuple[str, ...] = CPU_CANDIDATES,
            rounds: int = 3, warmup: int = 1) -> dict[str, list[float]]:
    """Step times per candidate, measured round-robin (``time_step(p)`` runs one step of
    precision ``p`` and returns its seconds). A candidate that raises is left out; one whose
    first timed step takes over :data:`GIVE_UP_RATIO` times the best so far stops there."""
    times: dict[str, list[float]] = {}
    alive = list(candidates)
    for round_ in range(warmup + rounds):
        for precision in list(alive):
            try:
                seconds = time_step(precision)
            except (RuntimeError, NotImplementedError) as err:
                logger.info("precision auto: %s failed on this machine (%s)", precision, err)
                alive.remove(precision)
                continue
            if round_ < warmup:
                continue
            times.setdefault(precision, []).append(seconds)
            best = min(min(v) for v in times.values())
            if round_ == warmup and seconds > GIVE_UP_RATIO * best:
                alive.remove(precision)
    if not times:
        raise RuntimeError("precision auto: no candidate precision could run a step")
    return times


def fastest(times: Mapping[str, list[float]], margin: float = MARGIN) -> str:
    """fp32 unless another precision's median is faster than fp32's by more than ``margin``."""
    medians = {k: statistics.median(v) for k, v in times.items() if v}
    if "fp32" not in medians:
        return min(medians, key=medians.get)
    best = min(medians, key=medians.get)
    return best if medians[best] < (1 - margin) * medians["fp32"] else "fp32"


def choose_precision(requested: str, device: Any, key: Mapping[str, Any] | None = None,
                     time_step: Callable[[str], float] | None = None,
                     folder: Path | None = None, rounds: int = 3) -> str:
    """The concrete precision (``fp32``, ``bf16``, ``fp16``) that ``requested`` means here.

    Args:
        requested: ``training.precision`` / ``evaluation.precision`` / the pyfunc's.
        device: The ``torch.device`` the work runs on.
        key: What the answer depends on besides the machine (:func:`model_shape` plus the
            workload and threads); the machine and torch version are added.
        time_step: Runs one step in the given precision, returns its seconds (see
            :func:`training_step_timer`, :func:`forward_timer`). None on a cache miss
            means fp32 (nothing to measure with).
        folder: Cache folder (default :func:`cache_dir`).
    """
    if requested != "auto":
        return requested
    if device.type == "cuda":
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    full_key = {**machine_key(), **dict(key or {})}
    cached = read_cached(full_key, folder)
    if cached is not None:
        logger.info("precision auto: %s (cached for this CPU and model)", cached)
        return cached
    if time_step is None:
        return "fp32"
    times = measure(time_step, rounds=rounds)
    choice = fastest(times)
    medians = ", ".join(f"{k} {statistics.median(v):.3f} s" for k, v in times.items())
    logger.info("precision auto: measured %s per step; using %s", medians, choice)
    write_cached(full_key, choice, times, folder)
    return choice


# --------------------------------------------------------------------------------------
# What is timed: the real model's step, on a copy, on random data
# --------------------------------------------------------------------------------------
def _autocast_for(precision: str, device: Any):
    try:
        from sa2_pipeline.inference.precision import autocast, resolve_precision
    except ImportError:  # older layout
        from sa2_pipeline.engine.runtime import autocast, resolve_precision
    return autocast(device, resolve_precision(precision, device))


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
    """``time_step(precision)``: one training step (forward, loss, backward, Adam) of a
    *copy* of ``model`` on random data. The model, its optimiser and every random state
    of the caller are left as they were."""
    import copy

    import torch

    probe = copy.deepcopy(model).train()
    optimizer = torch.optim.Adam([p for p in probe.parameters() if p.requires_grad], lr=1e-6)
    with torch.random.fork_rng(devices=[]):
        x, y = _random_batch(input_shape, num_classes, device, channels_last)

    def time_step(precision: str) -> float:
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with _autocast_for(precision, device):
            out = probe(x)
        out = tuple(o.float() for o in out) if isinstance(out, (tuple, list)) else out.float()
        loss_fn(out, y).backward()
        optimizer.step()
        return time.perf_counter() - start

    return time_step


def forward_timer(model: Any, input_shape: tuple[int, ...], device: Any,
                  channels_last: bool = False) -> Callable[[str], float]:
    """``time_step(precision)``: one inference forward of ``model`` (eval mode, no grad) on
    random tiles; the model's mode is restored afterwards."""
    import torch

    with torch.random.fork_rng(devices=[]):
        x, _ = _random_batch(input_shape, 1, device, channels_last)

    def time_step(precision: str) -> float:
        was_training = model.training
        model.eval()
        try:
            start = time.perf_counter()
            with torch.inference_mode(), _autocast_for(precision, device):
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
