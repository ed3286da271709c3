"""A model bundle logged to the active MLflow run as a self-contained pyfunc model.

The model is logged by path (:mod:`sa2_pipeline.tracking.pyfunc_model`, MLflow "models
from code") with the package's source beside it, an explicit signature, an input example
and pinned pip requirements; :func:`usage_tags` are what a user needs to know to use a
registered version correctly.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from sa2_pipeline.config import InferenceConfig, PredictionConfig
from sa2_pipeline.models.bundle import members_of
from sa2_pipeline.reporting.provenance import dvc_data_version, git_commit

__all__ = ["log_model_bundle", "model_signature", "usage_tags"]


def model_signature():
    """The params ``threshold`` (double) and ``tta`` (boolean), with
    :class:`~sa2_pipeline.config.PredictionConfig`'s defaults, and the uint8
    label mask ``(H, W)`` out. No input schema: the pyfunc takes two input forms (an
    ``(H, W, 3)`` 0-255 array, or a one-row table with an encoded image) and checks them
    itself, refusing floats that a uint8 tensor schema would make the scoring server cast
    (tracking/pyfunc.py, docs/inference.md)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec, Schema, TensorSpec


    return ModelSignature(
        inputs=None,
        outputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1))]),
        params=ParamSchema([ParamSpec("threshold", "double", PredictionConfig.threshold),
                            ParamSpec("tta", "boolean", PredictionConfig.tta)]),
    )


def load_config() -> dict[str, Any]:
    """The pyfunc's load-time settings and their defaults (``engine``:
    ``inference.engine``'s), logged with the model so a loader may override them."""
    return {"engine": InferenceConfig.engine}


def usage_tags(bundle: dict[str, Any] | list, model_name: str,
               root: str | Path = ".") -> dict[str, str]:
    """What a user needs to use a version correctly, as version tags (without the
    ``sa2.`` prefix, see :func:`sa2_pipeline.tracking.model_versions.set_version_tags`):
    the training pixel size (bundle metadata ``pixel_size_um``), the raw data's DVC hash
    (``dvc.lock``, or the ``data/01_raw/<dataset>.dvc`` file; the dataset is the one
    ``sa2net-<dataset>`` names), the git commit, and the input convention. ``unknown``
    where a value is not known."""

    first = members_of(bundle)[0]
    dataset = model_name.split("-", 1)[1] if "-" in model_name else model_name
    pixel = (first.get("metadata") or {}).get("pixel_size_um")
    return {
        "pixel_size_um": "unknown" if pixel is None else f"{float(pixel):g}",
        "data_version": dvc_data_version(root, dataset)
        or _dvc_file_hash(Path(root) / "data" / "01_raw" / f"{dataset}.dvc") or "unknown",
        "git_commit": git_commit(root),
        "input_convention": str(first.get("input_convention")),
    }


def _dvc_file_hash(path: Path) -> str | None:
    import yaml

    try:
        outs = (yaml.safe_load(path.read_text()) or {}).get("outs") or []
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    return next((o.get("md5") or o.get("hash") for o in outs if isinstance(o, dict)), None)


def _pip_requirements() -> list[str]:
    from importlib.metadata import version

    def pin(dist: str) -> str:
        return f"{dist}=={version(dist).split('+')[0]}"

    return [pin("torch"), pin("numpy"), pin("mlflow"), pin("opencv-python-headless")]


def log_model_bundle(bundle: dict[str, Any] | list, *, input_example_size: int = 64,
                     onnx_dir: str | Path | None = None) -> Any:
    """Log a bundle (or a list of bundles: a fold ensemble) to the active MLflow run as a
    self-contained pyfunc model.

    The package's source travels with the model (``code_paths``), so loading it needs
    neither this project installed nor a Kedro session. ``onnx_dir``: the checked ONNX
    exports (``member_<i>.onnx``, :mod:`sa2_pipeline.inference.export_check`), stored as
    the artifact ``onnx`` beside the PyTorch weights.

    Returns:
        MLflow's ``ModelInfo``.
    """
    import mlflow
    import torch

    package_dir = Path(__file__).parents[1]  # sa2_pipeline/, which travels with the model

    rng = np.random.default_rng(0)
    example = rng.integers(0, 256, (input_example_size, input_example_size, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model_bundle.pt"
        torch.save(bundle, path)
        return mlflow.pyfunc.log_model(
            name="model",
            # Logged by path (MLflow "models from code"), not by pickling an object.
            python_model=str(package_dir / "tracking" / "pyfunc_model.py"),
            artifacts={"model_bundle": str(path),
                       **({"onnx": str(onnx_dir)} if onnx_dir is not None else {})},
            code_paths=[str(package_dir)],
            signature=model_signature(),
            # load-time settings (tracking/pyfunc.py: LOAD_CONFIG); a key logged here
            # is one mlflow.pyfunc.load_model(model_config=...) may override
            model_config=load_config(),
            input_example=example,
            pip_requirements=_pip_requirements(),
        )
