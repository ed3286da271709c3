"""Sliding-window inference with Gaussian importance weighting and D4 test-time augmentation.

Tiles of ``patch_size`` overlap by ``overlap`` (tile positions as in nnU-Net: the fewest steps
no longer than ``patch * (1 - overlap)``, spread evenly from edge to edge). Each tile's
probabilities are weighted by a Gaussian centred on the tile (sigma = patch / 8), accumulated,
and divided by the accumulated weights. Images smaller than the patch (in either dimension)
are reflect-padded up to it (centred) and cropped back, so they take one forward pass.

The model must return logits ``(B, num_classes, h, w)`` at the input's resolution, or a
tuple/list of such (deep supervision) whose FIRST element is the final prediction.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator
from typing import Literal

import numpy as np
import torch
from torch import nn

from sa2_pipeline.config import EvaluationConfig, PredictionConfig
from sa2_pipeline.runtime.precision import autocast as autocast_for
from sa2_pipeline.runtime.precision import resolve_precision
from sa2_pipeline.runtime.precision_probe import concrete_precision

__all__ = [
    "gaussian_importance_map",
    "predict_image",
    "predict_sliding_window",
    "sliding_window_starts",
]

logger = logging.getLogger(__name__)

TTAMode = bool | Literal["none", "flips", "d4"]
Transform = Callable[[torch.Tensor], torch.Tensor]


def _as_size(size: int | tuple[int, int], name: str) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        pair = (int(size), int(size))
    else:
        values = tuple(int(v) for v in size)
        if len(values) != 2:
            raise ValueError(f"{name} must be an int or (height, width), got {size!r}")
        pair = (values[0], values[1])
    if min(pair) < 1:
        raise ValueError(f"{name} must be positive, got {size!r}")
    return pair


def sliding_window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Start offsets of tiles covering ``[0, size)`` with tiles of length ``patch``.

    Args:
        size: Image length along one axis (>= ``patch``).
        patch: Tile length.
        overlap: Minimum fraction of a tile shared with its neighbour, in [0, 1).

    Returns:
        Sorted offsets, the first 0 and the last ``size - patch``.
    """
    if size <= patch:
        return [0]
    target_step = patch * (1.0 - overlap)
    num_steps = math.ceil((size - patch) / target_step) + 1
    step = (size - patch) / (num_steps - 1)
    return [int(round(step * i)) for i in range(num_steps)]


def gaussian_importance_map(
    patch_size: tuple[int, int],
    sigma_scale: float = 1.0 / 8.0,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Separable Gaussian weights ``(h, w)`` peaking at 1 in the tile centre.

    Args:
        patch_size: ``(h, w)``.
        sigma_scale: Sigma as a fraction of the tile length (nnU-Net: 1/8).
        device: Device of the returned tensor.

    Returns:
        float32 ``(h, w)``, symmetric under flips, strictly positive.
    """
    axes = []
    for length in patch_size:
        coords = torch.arange(length, dtype=torch.float64, device=device) - (length - 1) / 2.0
        sigma = max(length * sigma_scale, 1e-6)
        axes.append(torch.exp(-(coords**2) / (2.0 * sigma**2)))
    weights = axes[0][:, None] * axes[1][None, :]
    weights = weights / weights.max()
    # Keep far corners positive so every pixel gets a defined (if tiny) weight.
    return weights.clamp_min(1e-8).float()


def _reflect_indices(length: int, before: int, after: int, device: torch.device) -> torch.Tensor:
    """Indices that reflect-pad (numpy 'reflect', edge not repeated) by any amount."""
    indices = torch.arange(-before, length + after, device=device)
    if length == 1:
        return torch.zeros_like(indices)
    period = 2 * (length - 1)
    indices = indices.remainder(period)
    return torch.where(indices >= length, period - indices, indices)


def _tile_for(size: tuple[int, int], patch: tuple[int, int], margin: int) -> tuple[int, int]:
    """The tile for a mirrored image of ``size``: ``patch``, or the whole image along an axis
    that the margin alone pushed past the patch (one bigger forward pass instead of 2-4
    tiles; fully convolutional models take any size). A square patch stays square."""
    tile = tuple(s if p < s <= p + 2 * margin else p for s, p in zip(size, patch, strict=True))
    if patch[0] == patch[1]:
        side = max(tile)
        return (side, side)
    return tile  # type: ignore[return-value]


def _tta_transforms(
    mode: TTAMode, patch_size: tuple[int, int]
) -> list[tuple[Transform, Transform]]:
    """(forward, inverse) pairs on the last two dims."""
    if mode is False or mode == "none":
        return [(lambda x: x, lambda x: x)]
    if mode is True:
        mode = "d4" if patch_size[0] == patch_size[1] else "flips"
    if mode == "flips":
        pairs = []
        for dims in ((), (-1,), (-2,), (-2, -1)):
            flip = (lambda x, d=dims: torch.flip(x, d)) if dims else (lambda x: x)
            pairs.append((flip, flip))
        return pairs
    if mode == "d4":
        if patch_size[0] != patch_size[1]:
            raise ValueError(
                f"tta='d4' needs a square patch (rotations), got {patch_size}; use 'flips'"
            )
        pairs = []
        for k in range(4):
            for flip in (False, True):
                if flip:
                    pairs.append(
                        (
                            lambda x, k=k: torch.rot90(torch.flip(x, (-1,)), k, (-2, -1)),
                            lambda y, k=k: torch.flip(torch.rot90(y, -k, (-2, -1)), (-1,)),
                        )
                    )
                else:
                    pairs.append(
                        (
                            lambda x, k=k: torch.rot90(x, k, (-2, -1)),
                            lambda y, k=k: torch.rot90(y, -k, (-2, -1)),
                        )
                    )
        return pairs
    raise ValueError(f"tta must be a bool or one of 'none', 'flips', 'd4', got {mode!r}")


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode; restore each one's own mode afterwards."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def _infer_device(model: nn.Module, fallback: torch.device) -> torch.device:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return fallback


def _forward_probabilities(
    model: nn.Module,
    tiles: torch.Tensor,
    transforms: list[tuple[Transform, Transform]],
    num_classes: int,
    autocast: contextlib.AbstractContextManager,
) -> torch.Tensor:
    """Mean over TTA transforms of the tile probabilities ``(B, num_classes, h, w)``, float32."""
    total: torch.Tensor | None = None
    for forward_t, inverse_t in transforms:
        # channels-last: the CPU's convolution kernels run about 1.4-1.7x faster on it
        # (benchmarks/bench_inference.py); values are the same up to float rounding.
        transformed = forward_t(tiles).contiguous(memory_format=torch.channels_last)
        with autocast:
            outputs = model(transformed)
        logits = outputs[0] if isinstance(outputs, (tuple, list)) else outputs
        if (
            logits.dim() != 4
            or logits.shape[1] != num_classes
            or logits.shape[-2:] != transformed.shape[-2:]
        ):
            raise ValueError(
                f"model output {tuple(logits.shape)} does not match input tiles "
                f"{tuple(transformed.shape)} with num_classes={num_classes}: expected "
                f"(B, {num_classes}, h, w) at the input's size"
            )
        logits = logits.float()
        probs = torch.sigmoid(logits) if num_classes == 1 else torch.softmax(logits, dim=1)
        probs = inverse_t(probs)
        total = probs if total is None else total + probs
    return total / len(transforms)


def predict_sliding_window(
    model: nn.Module,
    image: torch.Tensor,
    *,
    patch_size: int | tuple[int, int] | None,
    overlap: float = PredictionConfig.overlap,
    batch_size: int = EvaluationConfig.batch_size,
    gaussian: bool = True,
    tta: TTAMode = PredictionConfig.tta,
    num_classes: int = 1,
    device: torch.device | str | None = None,
    precision: str = PredictionConfig.precision,
    border: int | None = None,
) -> torch.Tensor:
    """Probabilities for whole images from overlapping, Gaussian-weighted tiles.

    Every image is first mirrored by ``border`` pixels on each side (U-Net's overlap-tile
    strategy): the convolutions' zero padding then lies in mirrored context, not against
    the image, whose edge would otherwise read as the edge of a black object
    (docs/deviations.md). Runs under ``torch.inference_mode()`` in eval mode; every
    submodule's train/eval mode is restored afterwards.

    Args:
        model: Returns logits ``(B, num_classes, h, w)`` (or a sequence, first = final).
        image: Float ``(C, H, W)`` or ``(N, C, H, W)``, already scaled as in training.
        patch_size: Tile side or ``(h, w)``; ``None`` = the whole image in one forward.
        overlap: Fraction of a tile shared with its neighbours, in [0, 1).
        batch_size: Tiles per forward pass.
        gaussian: Gaussian importance weighting (sigma = patch / 8); ``False`` = plain mean.
        tta: ``False``/``"none"``, ``"flips"`` (4), ``"d4"`` (8, square patches), ``True``
            (``"d4"`` if square, else ``"flips"``): mean after each exact inverse.
        num_classes: Output channels: 1 = sigmoid, >= 2 = softmax.
        device: Where the model runs; default the model's device.
        precision: ``fp32``, ``bf16``, ``fp16`` or ``auto`` (autocast of the forward,
            :mod:`sa2_pipeline.runtime.precision`); accumulation stays float32.
        border: Mirrored context around the image, in pixels; ``None`` = an eighth of the
            longer patch side (32 for 256), 0 = none (zero padding at the image edge).

    Returns:
        float32 probabilities ``(N, num_classes, H, W)`` on the input's device.

    Raises:
        ValueError: On bad arguments or a model output of the wrong shape.
    """
    image = _checked_batch(image, overlap, batch_size, num_classes, border)
    patch, margin = _geometry(image.shape[-2:], patch_size, border)
    transforms = _tta_transforms(tta, patch)
    run_device = torch.device(device) if device is not None else _infer_device(model, image.device)
    precision = concrete_precision(precision, run_device, model,
                                   (batch_size, image.shape[1], *patch))
    autocast = autocast_for(run_device, resolve_precision(precision, run_device))
    with _eval_mode(model), torch.inference_mode():
        weights_tile = (gaussian_importance_map(patch, device=run_device) if gaussian
                        else torch.ones(patch, dtype=torch.float32, device=run_device))
        results = [
            _window_one(model, single.to(run_device), patch, margin, overlap, batch_size,
                        weights_tile, transforms, num_classes, autocast).to(image.device)
            for single in image
        ]
    return torch.stack(results)


def _geometry(size: tuple[int, int], patch_size: int | tuple[int, int] | None,
              border: int | None) -> tuple[tuple[int, int], int]:
    """The tile and the mirrored margin for an image of ``size`` ``(H, W)``."""
    height, width = size
    patch = (height, width) if patch_size is None else _as_size(patch_size, "patch_size")
    margin = max(patch) // 8 if border is None else int(border)
    if patch_size is None:
        patch = (height + 2 * margin, width + 2 * margin)
    return _tile_for((height + 2 * margin, width + 2 * margin), patch, margin), margin


def _checked_batch(image: torch.Tensor, overlap: float, batch_size: int, num_classes: int,
                   border: int | None) -> torch.Tensor:
    """``image`` as ``(N, C, H, W)``, after checking it and the window's settings."""
    if image.dim() == 3:
        image = image.unsqueeze(0)
    if image.dim() != 4:
        raise ValueError(f"image must be (C, H, W) or (N, C, H, W), got shape {tuple(image.shape)}")
    if not image.is_floating_point():
        raise ValueError(f"image must be a float tensor scaled as in training, got {image.dtype}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if border is not None and border < 0:
        raise ValueError(f"border must be >= 0 or None, got {border}")
    return image


def _window_axis(length: int, tile: int, margin: int, device: torch.device
                 ) -> tuple[torch.Tensor, int]:
    """Source index of every window position along one axis (the image mirrored by
    ``margin``, then reflect-padded, centred, up to ``tile``) and the image's offset."""
    mirrored = _reflect_indices(length, margin, margin, device)
    pad = max(tile - len(mirrored), 0)
    padded = _reflect_indices(len(mirrored), pad // 2, pad - pad // 2, device)
    return mirrored[padded], pad // 2 + margin


def _take(image: torch.Tensor, index: torch.Tensor, dim: int) -> torch.Tensor:
    """``image`` at ``index`` along ``dim``: a view when the indices are a plain range."""
    first = int(index[0])
    if int(index[-1]) - first == len(index) - 1 and bool((index.diff() == 1).all()):
        return image.narrow(dim, first, len(index))
    return image.index_select(dim, index)


def _window_one(model, single, patch, margin, overlap, batch_size, weights_tile, transforms,
                num_classes, autocast) -> torch.Tensor:
    """Probabilities ``(num_classes, H, W)`` of one image ``(C, H, W)``.

    Tiles are cut from the image itself through index maps of the mirrored, padded image
    (never built): accumulators hold the image's own pixels only, so a thin image (H x 1)
    costs memory in proportion to its pixels, not to its padded size.
    """
    height, width = single.shape[-2:]
    rows, top = _window_axis(height, patch[0], margin, single.device)
    cols, left = _window_axis(width, patch[1], margin, single.device)
    starts = [(y, x) for y in sliding_window_starts(len(rows), patch[0], overlap)
              for x in sliding_window_starts(len(cols), patch[1], overlap)]
    logger.debug("Sliding window: %dx%d image, %d tiles of %s", height, width, len(starts),
                 patch)
    accumulated = torch.zeros((num_classes, height, width), dtype=torch.float32,
                              device=single.device)
    weight_sum = torch.zeros((height, width), dtype=torch.float32, device=single.device)
    for first in range(0, len(starts), batch_size):
        chunk = starts[first : first + batch_size]
        tiles = torch.stack([_take(_take(single, rows[y : y + patch[0]], -2),
                                   cols[x : x + patch[1]], -1) for y, x in chunk])
        probs = _forward_probabilities(model, tiles, transforms, num_classes, autocast)
        for (y, x), tile_probs in zip(chunk, probs, strict=True):
            # the part of the tile that lies on the image (the rest is mirrored context)
            y0, y1 = max(y, top), min(y + patch[0], top + height)
            x0, x1 = max(x, left), min(x + patch[1], left + width)
            if y1 <= y0 or x1 <= x0:
                continue
            weights = weights_tile[y0 - y : y1 - y, x0 - x : x1 - x]
            accumulated[:, y0 - top : y1 - top, x0 - left : x1 - left].addcmul_(
                tile_probs[:, y0 - y : y1 - y, x0 - x : x1 - x], weights)
            weight_sum[y0 - top : y1 - top, x0 - left : x1 - left] += weights
    return accumulated / weight_sum


def predict_image(
    model: nn.Module,
    image_uint8_hwc: np.ndarray,
    *,
    channel_order: Literal["rgb", "bgr"] = "rgb",
    **kwargs: object,
) -> np.ndarray:
    """Probabilities for one uint8 image, preprocessed as in training (scaled to [0, 1]).

    Args:
        model: See :func:`predict_sliding_window`.
        image_uint8_hwc: ``uint8 (H, W, C)`` RGB (or ``(H, W)`` grayscale).
        channel_order: ``"bgr"`` reverses the first three channels, as the model was trained.
        **kwargs: Keyword arguments of :func:`predict_sliding_window` (``patch_size`` is
            required).

    Returns:
        float32 ``(num_classes, H, W)`` probabilities.

    Raises:
        ValueError: On a non-uint8 image, a bad shape or channel order.
    """
    image = np.asarray(image_uint8_hwc)
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3:
        raise ValueError(f"image must be (H, W, C) or (H, W), got shape {image.shape}")
    if channel_order not in ("rgb", "bgr"):
        raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
    if channel_order == "bgr":
        if image.shape[2] < 3:
            raise ValueError("channel_order 'bgr' needs at least 3 channels")
        image = np.concatenate([image[..., 2::-1], image[..., 3:]], axis=-1)
    tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0)
    if "patch_size" not in kwargs:
        raise ValueError(
            "predict_image needs patch_size (an int, (h, w), or None for one whole-image pass)"
        )
    probabilities = predict_sliding_window(model, tensor, **kwargs)  # type: ignore[arg-type]
    return probabilities[0].cpu().numpy().astype(np.float32, copy=False)
