"""The registered MLflow model: one RGB image in, its label mask out, no Kedro needed.

The pyfunc owns the whole inference contract so a user can call
``mlflow.pyfunc.load_model("models:/sa2net-<dataset>@champion").predict(image)`` in a
fresh process: it converts the input to the network's convention (RGB or BGR, uint8 scaled
to [0, 1]), runs a Gaussian-weighted sliding window, and returns a uint8 label mask of the
input's height and width (0/1 for binary models).

It takes exactly what its signature declares (docs/inference.md): one ``uint8 (H, W, 3)``
image per call, each side at least :data:`MIN_SIDE` px, at most :data:`MAX_PIXELS`
pixels, and the params ``threshold`` and ``tta``, which reach the model with each call
and change nothing shared. Anything else is refused before any work, with a message that
MLflow's scoring server returns as HTTP 400.
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import numpy as np


class SA2NetSegmenter(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc around a model bundle or a fold ensemble of bundles."""

    def load_context(self, context: Any) -> None:
        import torch

        from sa2_pipeline.engine.threads import configure_threads
        from sa2_pipeline.inference.predict import Predictor

        configure_threads(0)  # free cores, or $SA2_NUM_THREADS (docs/environment.md)
        path = context.artifacts["model_bundle"]
        self.bundles = torch.load(path, map_location="cpu", weights_only=True)
        self.predictor = Predictor(self.bundles)

    # No type hints on predict: MLflow would try (and fail) to derive a schema from them;
    # the explicit tensor signature in registry.model_signature() is the contract.
    def predict(self, context, model_input, params=None):  # noqa: ANN001, ARG002
        """Segment one RGB image ``uint8 (H, W, 3)`` (exactly what the signature declares).

        Params (per call, declared in the signature): ``threshold`` (binary models, default
        0.5), ``tta`` (bool, default false). They are passed down with this call only.
        """
        params = params or {}
        image = _as_image(model_input)
        threshold = float(params.get("threshold", PARAM_DEFAULTS["threshold"]))
        if not 0.0 <= threshold <= 1.0:
            raise _refuse(f"threshold must be in [0, 1], got {threshold}")
        tta = bool(params.get("tta", PARAM_DEFAULTS["tta"]))
        return self.predictor.predict_mask(image, threshold, tta=tta)


#: Params the signature declares, with their defaults.
PARAM_DEFAULTS = {"threshold": 0.5, "tta": False}
#: Smallest side and largest size (pixels) of an image the served model takes; larger
#: images go through the slide pipeline (docs/inference.md).
MIN_SIDE = 32
MAX_PIXELS = 64_000_000


def _refuse(message: str) -> Exception:
    """An error MLflow's scoring server answers with HTTP 400 and this message."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def _as_image(model_input: Any) -> np.ndarray:
    """The one RGB uint8 image of a request, refused up front when it is not one."""
    arr = np.asarray(model_input)
    if arr.dtype != np.uint8:
        raise _refuse(f"expected a uint8 image, got dtype {arr.dtype}")
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise _refuse(f"expected one RGB image of shape (H, W, 3), got shape {arr.shape} "
                      "(grey: repeat it into 3 channels; several images: one request each)")
    height, width = arr.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise _refuse(f"image of shape {arr.shape} is empty, too small or degenerate: each "
                      f"side must be at least {MIN_SIDE} px")
    if height * width > MAX_PIXELS:
        raise _refuse(f"image of shape {arr.shape} has {height * width:,} pixels, over the "
                      f"limit of {MAX_PIXELS:,}: segment it with `sa2-pipeline segment`")
    return arr


def _set_model_from_code() -> None:
    """Entry point for MLflow's models-from-code logging (no cloudpickle of the class)."""
    import mlflow.models

    mlflow.models.set_model(SA2NetSegmenter())
