"""The engines' sessions and the module that puts one in a network's place.

See :mod:`sa2_pipeline.inference.engines` for the engines and how one is chosen.

"""

from __future__ import annotations

import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, get_args

import numpy as np

from sa2_pipeline.config import Engine, EvaluationConfig, PredictionConfig
from sa2_pipeline.inference.onnx_export import INPUT_NAME
from sa2_pipeline.runtime.precision import autocast, resolve_precision
from sa2_pipeline.runtime.precision_probe import machine_key

__all__ = ["ENGINES", "RUNTIMES", "EngineChoice", "EngineModule", "cpu_has_bf16",
           "make_session", "runtime_version"]


#: Every ``*.engine`` value.
ENGINES: tuple[str, ...] = get_args(Engine)
#: The engines that run an ONNX export, by the Python package that provides them.
RUNTIMES = {"onnxruntime": "onnxruntime", "openvino": "openvino"}


def runtime_version(engine: str) -> str | None:
    """The installed version of ``engine``'s runtime (``torch`` too); None if missing
    (not importable, e.g. uninstalled or blocked)."""
    import importlib.util
    from importlib.metadata import PackageNotFoundError, version

    package = RUNTIMES.get(engine, engine)
    try:
        if importlib.util.find_spec(package) is None:
            return None
        return version(package)
    except (PackageNotFoundError, ValueError, ImportError):
        return None


def cpu_has_bf16() -> bool:
    """Whether the CPU computes bf16 natively (AVX-512 BF16 or AMX)."""
    return any(flag in machine_key()["cpu_flags"] for flag in ("avx512_bf16", "amx_bf16"))


class _OnnxRuntimeSession:
    """An ONNX Runtime CPU session: ``session(float32 NCHW array) -> logits array``."""

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        if os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE":
            # the project's wait policy for a busy machine (runtime.threads): no spinning
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options,
                                            providers=["CPUExecutionProvider"])
        self.kind = type(self.session).__module__ + "." + type(self.session).__name__

    def __call__(self, array: np.ndarray) -> np.ndarray:
        return self.session.run(None, {INPUT_NAME: array})[0]


class _OpenVinoSession:
    """An OpenVINO CPU compiled model; one request at a time (requests are not shared
    between threads, so a lock serialises concurrent callers)."""

    def __init__(self, path: Path, threads: int, precision: str) -> None:
        import openvino as ov

        core = ov.Core()
        config = {"INFERENCE_NUM_THREADS": threads,
                  "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
                  "PERFORMANCE_HINT": "LATENCY"}
        self.compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.lock = threading.Lock()
        self.kind = type(self.compiled).__module__ + "." + type(self.compiled).__name__

    def __call__(self, array: np.ndarray) -> np.ndarray:
        with self.lock:
            self.request.infer({0: array})
            return self.request.get_output_tensor(0).data.copy()


def make_session(engine: str, path: str | Path, threads: int,
                 precision: str = PredictionConfig.precision):
    """A session of ``engine`` (``onnxruntime``/``openvino``) on the export ``path``."""
    if engine == "onnxruntime":
        return _OnnxRuntimeSession(Path(path), threads)
    if engine == "openvino":
        return _OpenVinoSession(Path(path), threads, precision)
    raise ValueError(f"no ONNX session for engine {engine!r}")


def _engine_module_class():
    import torch
    from torch import nn

    class EngineModule(nn.Module):
        """The eager network, run by an engine on tiles of the exported size."""

        def __init__(self, eager: nn.Module, session: Any, tile: tuple[int, int],
                     engine: str, precision: str) -> None:
            super().__init__()
            self.eager, self.session, self.tile = eager, session, tuple(tile)
            self.engine, self.precision = engine, precision
            self.in_channels = getattr(eager, "in_channels", 3)
            self.calls = {"engine": 0, "eager": 0}  # what really ran (tests, logs)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if (self.session is None or tuple(x.shape[-2:]) != self.tile
                    or x.device.type != "cpu"):
                self.calls["eager"] += 1
                if self.engine == "torch" and self.precision != "fp32":
                    with autocast(x.device, resolve_precision(self.precision, x.device)):
                        return _final(self.eager(x))
                return _final(self.eager(x))
            self.calls["engine"] += 1
            array = x.detach().to(torch.float32).contiguous().numpy()
            return torch.from_numpy(np.ascontiguousarray(self.session(array)))

    return EngineModule


def _final(output: Any) -> Any:
    return output[0] if isinstance(output, tuple | list) else output


def EngineModule(eager: Any, session: Any, tile: tuple[int, int], engine: str,  # noqa: N802
                 precision: str) -> Any:
    """An ``nn.Module`` running ``eager`` through ``session`` on ``tile``-sized batches
    (``session=None``: eager under ``precision``'s autocast, the ``auto`` choice of a
    torch precision)."""
    return _engine_module_class()(eager, session, tile, engine, precision)


@dataclass(frozen=True)
class EngineChoice:
    """What runs the network: engine, precision, tiles per forward, and why."""

    requested: str
    engine: str = "torch"
    precision: str = PredictionConfig.precision
    batch_size: int = EvaluationConfig.batch_size
    reason: str = ""
    versions: dict[str, str | None] = field(default_factory=dict)
    measured: dict[str, Any] | None = None

    def as_record(self) -> dict[str, Any]:
        return asdict(self)
