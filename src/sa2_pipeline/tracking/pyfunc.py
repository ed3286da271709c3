"""The registered MLflow model: one RGB image in, its label mask out, no Kedro needed.

The pyfunc owns the whole inference contract so a user can call
``mlflow.pyfunc.load_model("models:/sa2net-<dataset>@champion").predict(image)`` in a
fresh process: it converts the input to the network's convention (RGB or BGR, uint8 scaled
to [0, 1]), runs a Gaussian-weighted sliding window, and returns a uint8 label mask of the
input's height and width (0/1 for binary models).

It takes one image per call in one of two forms (docs/inference.md):

- an array ``(H, W, 3)`` of integers 0-255 (uint8 in process; over HTTP the JSON
  ``{"inputs": <nested list>}``), answered with the ``uint8 (H, W)`` mask;
- the compact form: a one-row table with the column ``image`` holding an encoded PNG,
  JPEG, BMP or TIFF file (bytes, or base64 text: over HTTP ``{"dataframe_split":
  {"columns": ["image"], "data": [["<base64>"]]}}``), answered with a one-row table:
  ``mask`` (base64 PNG), ``height``, ``width``, ``foreground_fraction``.

Each side must be at least :data:`MIN_SIDE` px and the image at most :data:`MAX_PIXELS`
pixels. Float, boolean or out-of-range values, other shapes, several images and anything
else are refused before any work, with a message that MLflow's scoring server returns as
HTTP 400. The params ``threshold`` and ``tta`` reach the model with each call and change
nothing shared.

The signature therefore declares the params and the mask output but no input schema: an
MLflow signature holds one input form, and a uint8 tensor schema makes the scoring server
cast a float JSON payload to uint8 before the model can refuse it. The checks here are the
input contract, and ``tests/inference/test_serving.py`` holds them to it over HTTP.
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import numpy as np

from sa2_pipeline.config import ConfigError, InferenceConfig, PredictionConfig, check_threshold
from sa2_pipeline.inference.encoding import (  # noqa: F401 - the limits
    MAX_PIXELS,
    MIN_SIDE,
    ImageRequestError,
    check_shape,
    decode_image,
    encode_mask,
)
from sa2_pipeline.inference.engines import ENGINES, engine_predictor
from sa2_pipeline.inference.onnx_export import member_files
from sa2_pipeline.models.bundle import load_bundle_file, members_of
from sa2_pipeline.runtime.threads import configure_threads


class SA2NetSegmenter(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc around a model bundle or a fold ensemble of bundles."""

    # The explicit signature (tracking.mlflow_model.model_signature) and the checks below are
    # the contract: no schema is derived from type hints, and MLflow does not warn about
    # their absence on every import.
    _skip_type_hint_validation = True

    def load_context(self, context: Any) -> None:
        """Load the bundle and build the engine once: ``engine`` is a load-time setting
        (``mlflow.pyfunc.load_model(uri, model_config={"engine": "openvino"})``, or for
        ``mlflow models serve`` the environment variable ``MLFLOW_PYFUNC_INFERENCE_CONFIG
        ='{"engine": "openvino"}'``), default :data:`LOAD_CONFIG`. Building a session
        (or measuring ``auto``) takes seconds, so it is not a per-call param."""
        configure_threads(0)  # free cores, or $SA2_NUM_THREADS (docs/environment.md)
        path = context.artifacts["model_bundle"]
        self.bundles = load_bundle_file(path)
        engine = (getattr(context, "model_config", None) or {}).get("engine",
                                                                    LOAD_CONFIG["engine"])
        if engine not in ENGINES:
            raise ConfigError(f"model_config engine must be one of {', '.join(ENGINES)}; "
                              f"got {engine!r}")
        exports = context.artifacts.get("onnx")
        files = member_files(exports, len(members_of(self.bundles))) if exports else None
        self.predictor = engine_predictor(self.bundles, engine=engine, onnx_files=files)

    def predict(self, context, model_input, params=None):  # noqa: ANN001, ARG002
        """Segment one image: an ``(H, W, 3)`` array of 0-255 integers (answered with the
        uint8 mask) or a one-row table with an encoded image in ``image`` (answered with
        a one-row table: base64 PNG ``mask``, ``height``, ``width``,
        ``foreground_fraction``).

        Params (per call, declared in the signature): ``threshold`` (binary models) and
        ``tta`` (bool), defaults :data:`PARAM_DEFAULTS` (``config.PredictionConfig``'s).
        They are passed down with this call only.
        """
        params = params or {}
        encoded = _is_table(model_input)
        image = _decoded(model_input) if encoded else _as_image(model_input)
        try:
            threshold = check_threshold(params.get("threshold", PARAM_DEFAULTS["threshold"]))
        except ConfigError as err:  # e.g. null or "high": a 400 with the reason, no trace
            raise _refuse(str(err)) from err
        tta = bool(params.get("tta", PARAM_DEFAULTS["tta"]))
        mask = self.predictor.predict_mask(image, threshold, tta=tta)
        return _encoded_answer(mask) if encoded else mask


#: Params the signature declares, with their defaults.
PARAM_DEFAULTS = {"threshold": PredictionConfig.threshold, "tta": PredictionConfig.tta}
#: Load-time settings (MLflow ``model_config``), with their defaults: the engine of
#: ``inference.engine``.
LOAD_CONFIG = {"engine": InferenceConfig.engine}
# MIN_SIDE, MAX_PIXELS: the smallest side and largest size (pixels) of an image the
# served model takes, in both forms; larger images go through the slide pipeline.
#: The column of a compact request (docs/inference.md).
ENCODED_COLUMN = "image"


def _refuse(message: str) -> Exception:
    """An error MLflow's scoring server answers with HTTP 400 and this message."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def _as_image(model_input: Any) -> np.ndarray:
    """The one RGB uint8 image of an array request, refused up front when it is not one."""
    arr = np.asarray(model_input)
    if arr.dtype.kind not in "ui":
        raise _refuse(f"expected an image of integers 0-255 (uint8), got dtype {arr.dtype}"
                      + (": float pixel values are refused, not rounded; send the uint8 "
                         "image" if arr.dtype.kind == "f" else ""))
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise _refuse(f"expected one RGB image of shape (H, W, 3), got shape {arr.shape} "
                      "(grey: repeat it into 3 channels; several images: one request each)")
    _check_size(arr.shape)
    if arr.dtype != np.uint8:  # JSON integers arrive as int64
        if arr.min() < 0 or arr.max() > 255:
            raise _refuse(f"expected pixel values 0-255, got {arr.min()}..{arr.max()}")
        arr = arr.astype(np.uint8)
    return arr


def _check_size(shape: tuple[int, ...]) -> None:
    """The size limits of both forms (``inference.encoding``), as an HTTP 400."""

    try:
        check_shape(shape)
    except ImageRequestError as err:
        raise _refuse(str(err)) from err


def _is_table(model_input: Any) -> bool:
    import pandas as pd

    return isinstance(model_input, pd.DataFrame)


def _decoded(table: Any) -> np.ndarray:
    """The RGB uint8 image of a compact request: one row, an encoded file in ``image``."""
    import base64
    import binascii


    if list(table.columns) != [ENCODED_COLUMN] or len(table) != 1:
        raise _refuse(f"expected a table of one row and the one column "
                      f"{ENCODED_COLUMN!r} (an encoded PNG/JPEG/BMP/TIFF, base64), got "
                      f"{len(table)} row(s) and columns {list(table.columns)}")
    cell = table[ENCODED_COLUMN].iloc[0]
    try:
        data = bytes(cell) if isinstance(cell, bytes | bytearray) else base64.b64decode(
            str(cell), validate=True)
        return decode_image(data)
    except (binascii.Error, ValueError) as err:  # ImageRequestError is a ValueError
        what = "image" if isinstance(err, ImageRequestError) else "base64 text"
        raise _refuse(f"column {ENCODED_COLUMN!r}: bad {what}: {err}") from err


def _encoded_answer(mask: np.ndarray) -> Any:
    """The one-row answer of a compact request."""
    import pandas as pd


    return pd.DataFrame({"mask": [encode_mask(mask)], "height": [mask.shape[0]],
                         "width": [mask.shape[1]],
                         "foreground_fraction": [float((mask > 0).mean())]})


def _set_model_from_code() -> None:
    """Entry point for MLflow's models-from-code logging (no cloudpickle of the class)."""
    import mlflow.models

    mlflow.models.set_model(SA2NetSegmenter())
