"""The registered MLflow model: raw images in, label masks out, no Kedro needed.

The pyfunc owns the whole inference contract so a user can call
``mlflow.pyfunc.load_model("models:/sa2net-<dataset>@champion").predict(image)`` in a
fresh process: it converts the input to the network's convention (RGB or BGR, uint8 scaled
to [0, 1]), runs a Gaussian-weighted sliding window for images of any size, and returns a
uint8 label mask of the input's height and width (0/1 for binary models).
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
        """Segment one image (H, W, 3) / (H, W) uint8, or a batch (N, H, W, 3) of equal size.

        Params (optional): ``threshold`` (binary models, default 0.5), ``tta`` (bool).
        """
        params = params or {}
        images, batched = _as_images(model_input)
        self.predictor.tta = bool(params.get("tta", False))
        threshold = float(params.get("threshold", 0.5))
        masks = [self.predictor.predict_mask(image, threshold) for image in images]
        return np.stack(masks) if batched else masks[0]


def _as_images(model_input: Any) -> tuple[list[np.ndarray], bool]:
    if isinstance(model_input, dict) and len(model_input) == 1:
        model_input = next(iter(model_input.values()))
    if hasattr(model_input, "to_numpy") and not isinstance(model_input, np.ndarray):
        raise TypeError(
            "SA2NetSegmenter.predict takes a uint8 image array (H, W, 3), not a DataFrame"
        )
    arr = np.asarray(model_input)
    if arr.dtype != np.uint8:
        # JSON payloads (model serving) arrive as int64: accept exact 0..255 integers.
        if np.issubdtype(arr.dtype, np.integer) and arr.size and 0 <= arr.min() <= arr.max() <= 255:
            arr = arr.astype(np.uint8)
        else:
            raise TypeError(f"expected a uint8 image, got dtype {arr.dtype}")
    if arr.ndim in (2, 3, 4) and 0 in arr.shape:  # found by tests/test_config_properties.py
        raise ValueError(f"expected an image of at least 1 x 1 pixels, got shape {arr.shape}")
    if arr.ndim == 2:
        return [np.repeat(arr[..., None], 3, axis=-1)], False
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        return [arr[..., :3]], False
    if arr.ndim == 4 and arr.shape[-1] in (3, 4):
        return [a[..., :3] for a in arr], True
    raise ValueError(
        f"expected an image (H, W), (H, W, 3) or a batch (N, H, W, 3); got shape {arr.shape}"
    )


def _set_model_from_code() -> None:
    """Entry point for MLflow's models-from-code logging (no cloudpickle of the class)."""
    import mlflow.models

    mlflow.models.set_model(SA2NetSegmenter())
