"""Whole-image prediction shared by validation, evaluation and the MLflow model."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from sa2_pipeline.config import EvaluationConfig, PredictionConfig
from sa2_pipeline.models.bundle import members_of, model_from_bundle


def probabilities_to_mask(probs: np.ndarray,
                          threshold: float = PredictionConfig.threshold) -> np.ndarray:
    """Class probabilities (C, H, W) -> uint8 label mask (H, W).

    One channel: ``p > threshold`` gives {0, 1}. Several: argmax gives class indices.
    """
    if probs.ndim != 3:
        raise ValueError(f"expected probabilities (C, H, W), got shape {probs.shape}")
    if probs.shape[0] == 1:
        return (probs[0] > threshold).astype(np.uint8)
    return probs.argmax(axis=0).astype(np.uint8)


def predict_probabilities(
    model: Any,
    images: Iterable[tuple[str, np.ndarray]],
    *,
    num_classes: int,
    patch_size: int,
    overlap: float = PredictionConfig.overlap,
    batch_size: int = EvaluationConfig.batch_size,
    tta: bool = PredictionConfig.tta,
    channel_order: str = "rgb",
    device: Any = None,
    precision: str = PredictionConfig.precision,
) -> Iterable[tuple[str, np.ndarray]]:
    """Yield ``(id, probabilities (C, H, W) float32)`` for uint8 HWC images of any size.

    Images up to ``patch_size`` go through one forward pass; larger ones through a
    Gaussian-weighted sliding window (:mod:`sa2_pipeline.inference.sliding_window`).
    """
    from sa2_pipeline.inference.sliding_window import predict_image

    for image_id, image in images:
        probs = predict_image(
            model,
            image,
            patch_size=patch_size,
            overlap=overlap,
            batch_size=batch_size,
            tta=tta,
            num_classes=num_classes,
            channel_order=channel_order,
            device=device,
            precision=precision,
        )
        yield image_id, probs


def resize_probabilities(probs: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinearly resize (C, h, w) probabilities to (C, height, width)."""
    import cv2

    if probs.shape[1:] == (height, width):
        return probs
    hwc = cv2.resize(np.ascontiguousarray(probs.transpose(1, 2, 0)), (width, height),
                     interpolation=cv2.INTER_LINEAR)
    if hwc.ndim == 2:
        hwc = hwc[..., None]
    return np.ascontiguousarray(hwc.transpose(2, 0, 1))


class Predictor:
    """Probabilities for uint8 images from one model bundle or an ensemble of them.

    Each member keeps its own input convention (channel order; native resolution with a
    sliding window, or resized to the side it was trained at and resized back). An
    ensemble averages its members' probabilities (the paper's 5-fold ensemble).
    """

    def __init__(
        self,
        bundles: Any,
        *,
        device: Any = None,
        tta: bool = PredictionConfig.tta,
        overlap: float = PredictionConfig.overlap,
        batch_size: int = EvaluationConfig.batch_size,
        patch_size: int | None = None,
        precision: str = PredictionConfig.precision,
    ) -> None:
        import torch


        self.device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.bundles = members_of(bundles)
        if not self.bundles:
            raise ValueError("a predictor needs at least one model bundle")
        classes = {int(b["init_kwargs"].get("num_classes", 1)) for b in self.bundles}
        if len(classes) != 1:
            raise ValueError(f"ensemble members disagree on num_classes: {sorted(classes)}")
        self.num_classes = classes.pop()
        self.models = [model_from_bundle(b).to(self.device) for b in self.bundles]
        self.tta = tta
        self.overlap = overlap
        self.batch_size = batch_size
        self.patch_size = patch_size
        self.precision = precision

    def member_probabilities(self, image: np.ndarray, native: bool = True, *,
                             tta: bool | None = None) -> list[np.ndarray]:
        """Each member's probabilities; at the image's size, or (``native=False``) at the
        member's working resolution (its ``resize_to`` side, e.g. the paper's 224).

        ``tta`` overrides the predictor's setting for this call only (nothing is stored,
        so concurrent callers, e.g. a scoring server's threads, cannot affect each other).
        """
        from sa2_pipeline.inference.sliding_window import predict_image

        tta = self.tta if tta is None else tta
        out = []
        for model, bundle in zip(self.models, self.bundles, strict=True):
            side = bundle.get("resize_to")
            work = image
            if side:
                import cv2

                work = cv2.resize(image, (side, side), interpolation=cv2.INTER_LINEAR)
            patch = self.patch_size or int(bundle.get("patch_size", 256))
            probs = predict_image(
                model, work,
                patch_size=max(patch, side or 0),
                overlap=self.overlap,
                batch_size=self.batch_size,
                tta=tta,
                num_classes=self.num_classes,
                channel_order=bundle.get("input_convention", {}).get("channel_order", "rgb"),
                device=self.device,
                precision=self.precision,
            )
            if native:
                probs = resize_probabilities(probs, image.shape[0], image.shape[1])
            out.append(probs)
        return out

    def probabilities(self, image: np.ndarray, *, tta: bool | None = None) -> np.ndarray:
        """Mean probabilities (C, H, W) over the members, at the image's size."""
        members = self.member_probabilities(image, tta=tta)
        return members[0] if len(members) == 1 else np.mean(members, axis=0)

    def predict_mask(self, image: np.ndarray, threshold: float = PredictionConfig.threshold, *,
                     tta: bool | None = None) -> np.ndarray:
        """uint8 label mask (H, W); ``tta`` as in :meth:`member_probabilities`."""
        return probabilities_to_mask(self.probabilities(image, tta=tta), threshold)
