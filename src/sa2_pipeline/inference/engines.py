"""What runs the network: eager PyTorch, ONNX Runtime or OpenVINO (``inference.engine``).

An engine runs a model's ONNX export (:mod:`sa2_pipeline.inference.onnx_export`): a fixed
tile with a dynamic batch. :class:`EngineModule` puts it where the eager network was: a
``torch.nn.Module`` holding the eager network, whose forward hands a batch of tiles of the
exported size to the engine's session and anything else (an image smaller than the tile,
a GPU tensor) to the eager network. The sliding window, TTA, ensembles, the slide stream
and the pyfunc therefore run unchanged on every engine.

Engines and precisions:

- ``torch``: the eager network under the requested precision's autocast;
- ``onnxruntime``: fp32 (its CPU provider has no bf16 convolutions);
- ``openvino``: fp32, or bf16 when ``precision`` asks for it (``bf16``/``auto``) and the
  CPU has native bf16 (``avx512_bf16``/``amx_bf16``). OpenVINO would pick bf16 by itself
  on such CPUs; fp32 is asked for explicitly, so ``fp32`` means fp32 everywhere;
- ``auto``: the fastest of the above whose masks agree with eager fp32, measured once per
  machine and model (:mod:`sa2_pipeline.inference.engine_probe`).

Each session gets torch's thread count (set by the entry point from ``num_threads`` and
:mod:`sa2_pipeline.runtime.threads`). A runtime that is not installed, a model version
without an export, a tile other than the exported one, or a GPU device falls back to
``torch`` with a logged message, never an error.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from sa2_pipeline.config import EvaluationConfig
from sa2_pipeline.inference.engine_probe import choose_engine
from sa2_pipeline.inference.engine_sessions import (
    ENGINES,
    RUNTIMES,
    EngineChoice,
    EngineModule,
    cpu_has_bf16,
    make_session,
    runtime_version,
)
from sa2_pipeline.inference.onnx_export import bundle_tile, export_members
from sa2_pipeline.inference.predict import Predictor

__all__ = ["ENGINES", "EngineChoice", "attach_engine", "engine_predictor", "runtime_version"]

logger = logging.getLogger(__name__)


def engine_predictor(bundles: Any, *, engine: str = EvaluationConfig.engine,
                     onnx_files: Sequence[str | Path] | Literal["export"] | None = None,
                     **predictor_kwargs: Any) -> Predictor:
    """A :class:`~sa2_pipeline.inference.predict.Predictor` whose networks ``engine`` runs
    from ``onnx_files`` (one export per member); ``"export"`` exports them now into a
    temporary folder kept as long as the predictor (a trained bundle not yet registered);
    None: no export, any engine but ``torch`` falls back to eager. The choice made is
    ``predictor.engine`` (an :class:`EngineChoice`); ``auto``'s batch size replaces the
    predictor's. ``predictor_kwargs``: the Predictor's own (device, tta, overlap,
    batch_size, patch_size, precision)."""
    predictor = Predictor(bundles, **predictor_kwargs)
    if engine != "torch" and onnx_files == "export":
        onnx_files = _export_now(predictor)
    predictor.models, choice = attach_engine(
        predictor.models, predictor.bundles, engine=engine, precision=predictor.precision,
        batch_size=predictor.batch_size, onnx_files=onnx_files, device=predictor.device,
        patch_size=predictor.patch_size)
    predictor.batch_size = choice.batch_size
    if choice.engine != "torch" or choice.measured is not None:
        # the engine (or auto's torch choice, inside EngineModule) holds the precision
        predictor.precision = "fp32"
    predictor.engine = choice
    return predictor


def _export_now(predictor: Predictor) -> list[Path] | None:
    import tempfile

    predictor._export_dir = tempfile.TemporaryDirectory(prefix="sa2-onnx-")
    try:
        records = export_members(predictor.bundles, predictor._export_dir.name,
                                 patch_size=predictor.patch_size)
    except RuntimeError as err:
        logger.warning("%s", err)
        return None
    return [Path(r["file"]) for r in records]


def _fallback(requested: str, precision: str, batch_size: int, reason: str) -> EngineChoice:
    logger.warning("engine %s: %s; running eager torch", requested, reason)
    return EngineChoice(requested, "torch", precision, batch_size, reason,
                        {"torch": runtime_version("torch")})


def attach_engine(models: Sequence[Any], bundles: Sequence[dict[str, Any]], *,
                  engine: str, precision: str, batch_size: int,
                  onnx_files: Sequence[str | Path] | None, device: Any,
                  patch_size: int | None = None) -> tuple[list[Any], EngineChoice]:
    """``models`` run by ``engine`` (``auto`` measured), and the choice made.

    Args:
        models: The eager networks (eval mode), one per member.
        bundles: Their bundles (for each member's tile).
        engine: One of :data:`ENGINES`.
        precision: The requested precision (``precision`` setting).
        batch_size: The requested tiles per forward.
        onnx_files: One export per member, or None (no export: eager).
        device: The torch device the models are on.
        patch_size: The window's tile setting (None: each bundle's training patch).

    Returns:
        The models to run (engine-backed where an engine runs) and the
        :class:`EngineChoice`, logged once.
    """
    import torch

    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}; got {engine!r}")
    if engine == "torch":
        return list(models), EngineChoice("torch", "torch", precision, batch_size, "requested",
                                          {"torch": runtime_version("torch")})
    problem = _unusable(bundles, onnx_files, torch.device(device), patch_size)
    if problem:
        return list(models), _fallback(engine, precision, batch_size, problem)
    tiles = [bundle_tile(b, patch_size) for b in bundles]
    threads = torch.get_num_threads()
    if engine == "auto":
        try:
            choice = choose_engine(models[0], onnx_files[0], tiles[0], precision=precision,
                                   batch_size=batch_size, threads=threads)
        except (RuntimeError, ValueError, OSError) as err:  # nothing could be measured
            return list(models), _fallback(engine, precision, batch_size,
                                           f"the measurement failed ({err})")
    else:
        choice = _fixed_choice(engine, precision, batch_size)
        if choice.engine == "torch":
            return list(models), choice
    out = []
    for model, path, tile in zip(models, onnx_files, tiles, strict=True):
        session = (None if choice.engine == "torch"
                   else make_session(choice.engine, path, threads, choice.precision))
        out.append(EngineModule(model, session, tile, choice.engine, choice.precision))
    logger.info("engine %s: %s %s, batch %d, %d thread(s) (%s)", engine, choice.engine,
                choice.precision, choice.batch_size, threads, choice.reason)
    return out, choice


def _unusable(bundles: Sequence[dict[str, Any]], onnx_files: Sequence[Any] | None,
              device: Any, patch_size: int | None) -> str | None:
    """Why no engine can run these models here; None when one can."""
    if device.type != "cpu":
        return (f"the engines run on the CPU; on {device.type} torch (with its autocast) "
                "stays the engine")
    if onnx_files is None:
        return ("this model carries no ONNX export (registered before exports, or its "
                "export failed the parity check: see the version's sa2.onnx.status tag)")
    if len(onnx_files) != len(bundles):
        return f"{len(onnx_files)} export(s) for {len(bundles)} ensemble member(s)"
    for bundle, path in zip(bundles, onnx_files, strict=True):
        exported = _exported_tile(path)
        wanted = bundle_tile(bundle, patch_size)
        if exported is not None and exported != wanted:
            return (f"the export's tile is {exported[0]}x{exported[1]}, the window's "
                    f"{wanted[0]}x{wanted[1]} (patch_size)")
    return None


def _exported_tile(path: Any) -> tuple[int, int] | None:
    try:
        import onnx
    except ImportError:
        return None
    shape = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape
    dims = [d.dim_value for d in shape.dim]
    return (dims[2], dims[3]) if len(dims) == 4 and dims[2] and dims[3] else None


def _fixed_choice(engine: str, precision: str, batch_size: int) -> EngineChoice:
    """A named engine: its runtime installed, with the precision it runs."""
    version = runtime_version(engine)
    if version is None:
        return _fallback(engine, precision, batch_size,
                         f"{RUNTIMES[engine]} is not installed (pip install "
                         f"'sa2-pipeline[engines]', docs/environment.md)")
    run_precision = "fp32"
    if engine == "openvino" and precision in ("bf16", "auto") and cpu_has_bf16():
        run_precision = "bf16"
    note = "requested" if precision in (run_precision, "auto") else (
        f"requested; {engine} runs {run_precision} here (precision {precision})")
    return EngineChoice(engine, engine, run_precision, batch_size, note, {engine: version})
