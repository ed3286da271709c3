"""``engine: auto``: the fastest engine, precision and batch size of *this* model on *this*
machine whose masks agree with eager fp32.

Measured like ``precision: auto`` (:mod:`sa2_pipeline.runtime.precision_probe`): the real
network on a fixed tile (a seeded, smooth random image of the exported tile size), each
candidate in turn, round-robin so that a busy machine slows all alike, keeping eager
``torch:fp32`` unless another is faster per tile by more than the margin.

1. Candidates: ``torch``, ``onnxruntime`` and ``openvino`` in fp32; with ``precision:
   auto`` or ``bf16`` and a CPU with native bf16 (AVX-512 BF16 or AMX) also ``torch`` and
   ``openvino`` in bf16. Only installed runtimes take part.
2. Each candidate's probabilities on the fixed tile are compared with eager fp32's: its
   masks must agree on at least :data:`MASK_AGREEMENT` of the pixels, and an fp32
   candidate's probabilities must lie within :data:`PROB_TOLERANCE`. One that does not
   agree (or fails to run) is left out, with a log line.
3. The agreeing candidates are timed at the requested batch size; the winner is then
   timed at the other :data:`BATCH_SIZES` and the fastest per tile is kept.

The answer is cached per CPU (model name, generation, flags), torch, ONNX Runtime and
OpenVINO versions, thread count, model shape, tile and candidates, in one small JSON file
per key under ``$SA2_CACHE_DIR`` (the precision probe's folder), written atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from sa2_pipeline.inference.engine_sessions import (
    RUNTIMES,
    EngineChoice,
    EngineModule,
    cpu_has_bf16,
    make_session,
    runtime_version,
)
from sa2_pipeline.io_utils import atomic_write_text
from sa2_pipeline.runtime import precision_probe

__all__ = ["BATCH_SIZES", "MASK_AGREEMENT", "PROB_TOLERANCE", "candidates", "choose_engine"]

logger = logging.getLogger(__name__)

#: Masks of an engine must agree with eager fp32's on this fraction of pixels.
MASK_AGREEMENT = 0.9999
#: Largest probability difference allowed to an fp32 engine.
PROB_TOLERANCE = 1e-4
#: Batch sizes the winner is also timed at (besides the requested one).
BATCH_SIZES = (4, 8)
#: Timed rounds per candidate (after one warm-up); the fastest round counts.
ROUNDS = 2
#: Version of the record format and of the rules above (a change re-measures).
PROBE_VERSION = 1


def candidates(precision: str, bf16: bool, installed: set[str]) -> list[str]:
    """``engine:precision`` names worth measuring; the first (eager fp32) is the default."""
    precisions = ["fp32"]
    if precision in ("auto", "bf16") and bf16:
        precisions.append("bf16")
    names = []
    for prec in precisions:
        names += [f"{engine}:{prec}" for engine in ("torch", "onnxruntime", "openvino")
                  if (engine == "torch" or engine in installed)
                  and not (engine == "onnxruntime" and prec != "fp32")]
    return names


def fixed_tile(batch: int, channels: int, tile: tuple[int, int], seed: int = 0) -> Any:
    """A seeded, smooth random image batch ``(batch, C, h, w)`` in [0, 1] (float32)."""
    import torch
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, channels, max(tile[0] // 16, 2), max(tile[1] // 16, 2),
                        generator=generator)
    smooth = F.interpolate(coarse, size=tile, mode="bilinear", align_corners=False)
    noise = torch.rand(batch, channels, *tile, generator=generator) * 0.1
    return (smooth * 0.9 + noise).clamp_(0, 1)


def _probabilities(model: Any, x: Any) -> np.ndarray:
    import torch

    with torch.inference_mode():
        out = model(x)
    logits = (out[0] if isinstance(out, tuple | list) else out).float()
    probs = torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)
    return probs.numpy()


def _mask(probs: np.ndarray) -> np.ndarray:
    return probs[:, 0] > 0.5 if probs.shape[1] == 1 else probs.argmax(axis=1)


def probe_key(model: Any, tile: tuple[int, int], names: list[str], threads: int,
              batch_size: int) -> dict[str, Any]:
    """What the answer depends on: the machine, the runtimes, the model and the tile."""
    channels = getattr(model, "in_channels", 3)
    return {**precision_probe.machine_key(),
            **precision_probe.model_shape(model, (batch_size, channels, *tile), False),
            "runtimes": {e: runtime_version(e) for e in RUNTIMES},
            "candidates": names, "threads": threads, "batches": sorted(
                {batch_size, *BATCH_SIZES}), "probe": PROBE_VERSION}


def _cache_file(key: dict[str, Any]) -> Path:
    text = json.dumps(key, sort_keys=True)
    name = f"engine-{hashlib.sha256(text.encode()).hexdigest()[:20]}.json"
    return precision_probe.cache_dir() / name


def _read_cached(key: dict[str, Any]) -> dict[str, Any] | None:
    try:
        record = json.loads(_cache_file(key).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("key") != json.loads(json.dumps(key)):
        return None
    return record.get("choice")


def _write_cached(key: dict[str, Any], choice: dict[str, Any]) -> None:
    path = _cache_file(key)
    record = {"key": key, "choice": choice,
              "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    except OSError as err:
        logger.warning("engine auto: could not cache the choice in %s (%s)", path, err)


def choose_engine(model: Any, onnx_file: str | Path, tile: tuple[int, int], *,
                  precision: str, batch_size: int, threads: int) -> EngineChoice:
    """The measured (or cached) ``auto`` choice for ``model`` and its export."""
    installed = {e for e in RUNTIMES if runtime_version(e) is not None}
    names = candidates(precision, cpu_has_bf16(), installed)
    key = probe_key(model, tile, names, threads, batch_size)
    versions = {"torch": runtime_version("torch"), **key["runtimes"]}
    cached = _read_cached(key)
    if cached is not None:
        engine, prec = cached["engine"].split(":")
        return EngineChoice("auto", engine, prec, int(cached["batch_size"]),
                            f"measured on this machine earlier ({_cache_file(key).name})",
                            versions, cached)
    measured = _measure(model, onnx_file, tile, names, batch_size, threads)
    engine, prec = measured["engine"].split(":")
    _write_cached(key, measured)
    return EngineChoice("auto", engine, prec, int(measured["batch_size"]),
                        "measured on this machine now", versions, measured)


def _measure(model: Any, onnx_file: str | Path, tile: tuple[int, int], names: list[str],
             batch_size: int, threads: int) -> dict[str, Any]:
    channels = getattr(model, "in_channels", 3)
    runners = {}
    for name in names:
        engine, prec = name.split(":")
        try:
            session = None if engine == "torch" else make_session(engine, onnx_file, threads,
                                                                  prec)
        except Exception as err:  # noqa: BLE001 - a runtime that cannot load the export
            logger.info("engine auto: %s could not load the export (%s)", name, err)
            continue
        runners[name] = EngineModule(model, session, tile, engine, prec)
    agreement = _agreement(runners, fixed_tile(2, channels, tile))
    agreeing = [n for n in runners if agreement[n]["agrees"]]
    for name in set(runners) - set(agreeing):
        logger.info("engine auto: %s left out, its masks do not agree with eager fp32 (%s)",
                    name, agreement[name])

    def timer(batch: int):
        x = fixed_tile(batch, channels, tile, seed=1)

        def time_step(variant: str) -> float:
            import torch

            start = time.perf_counter()
            with torch.inference_mode():
                runners[variant.rsplit("@", 1)[0]](x)
            return (time.perf_counter() - start) / batch
        return time_step

    first = precision_probe.measure(timer(batch_size), tuple(f"{n}@{batch_size}"
                                                             for n in agreeing), rounds=ROUNDS)
    default = f"torch:fp32@{batch_size}"
    winner = precision_probe.fastest(first, default=default)
    times = dict(first)
    best_batch = batch_size
    others = [b for b in sorted(set(BATCH_SIZES)) if b != batch_size]
    name = winner.rsplit("@", 1)[0]
    for batch in others:
        more = precision_probe.measure(timer(batch), (f"{name}@{batch}",), rounds=ROUNDS)
        times.update(more)
        if min(more[f"{name}@{batch}"]) < (1 - precision_probe.MARGIN) * min(
                times[f"{name}@{best_batch}"]):
            best_batch = batch
    return {"engine": name, "batch_size": best_batch,
            "per_tile_s": {k: round(min(v), 5) for k, v in times.items()},
            "agreement": agreement}


def _agreement(runners: dict[str, Any], x: Any) -> dict[str, dict[str, Any]]:
    """Each runner's largest probability difference and mask agreement against the
    eager fp32 network on the fixed tile."""
    reference_model = runners["torch:fp32"].eager
    reference = _probabilities(reference_model, x)
    out = {}
    for name, runner in runners.items():
        try:
            probs = _probabilities(runner, x)
        except Exception as err:  # noqa: BLE001 - a runtime failing on this model
            out[name] = {"agrees": False, "error": f"{type(err).__name__}: {err}"}
            continue
        diff = float(np.abs(probs - reference).max())
        masks = float((_mask(probs) == _mask(reference)).mean())
        fp32 = name.endswith(":fp32")
        out[name] = {"max_prob_diff": diff, "mask_agreement": masks,
                     "agrees": masks >= MASK_AGREEMENT and (not fp32 or diff <= PROB_TOLERANCE)}
    return out
