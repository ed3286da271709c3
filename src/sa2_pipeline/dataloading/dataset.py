"""Torch datasets over in-memory image/mask arrays: native-resolution patches and resized images.

Both datasets are deterministic: item ``i`` of epoch ``e`` depends only on ``(seed, e, i)``,
never on the order items are fetched in, the number of DataLoader workers, or how many items
were drawn before. Each item gets a fresh ``np.random.Generator`` from
``SeedSequence([seed, epoch, i])``; the augmentation's transforms get one shared pair of
generators seeded from it (see ``augmentation.py`` for why not ``set_random_seed``).

Call ``set_epoch(e)`` before iterating a DataLoader for epoch ``e``. Workers copy the dataset
when the iterator is created, so this works with the default ``persistent_workers=False``;
with persistent workers the epoch set later would not reach them: set it per item instead
(``sampling.EpochIndexed`` does).

Inputs: images ``uint8 (H, W, C)`` (RGB, or any channel count), masks ``uint8 (H, W)`` of class
indices (0/1 for binary). Outputs: image ``float32 (C, h, w)`` in [0, 1]; mask ``float32
(1, h, w)`` in {0, 1} for binary (``num_classes=1``) or ``int64 (h, w)`` otherwise.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from typing import Any, Literal

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["PatchDataset", "ResizedDataset", "resize_pair"]

logger = logging.getLogger(__name__)

ChannelOrder = Literal["rgb", "bgr"]


def _as_size(size: int | Sequence[int], name: str) -> tuple[int, int]:
    """Normalise an int or (h, w) pair to a tuple of two positive ints."""
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


def _validate_pairs(
    images: Sequence[np.ndarray], masks: Sequence[np.ndarray], num_classes: int
) -> None:
    if len(images) != len(masks):
        raise ValueError(f"got {len(images)} images but {len(masks)} masks")
    if len(images) == 0:
        raise ValueError("the dataset needs at least one image")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    for index, (image, mask) in enumerate(zip(images, masks, strict=True)):
        if image.dtype != np.uint8 or image.ndim != 3:
            raise ValueError(
                f"image {index}: expected uint8 (H, W, C), got {image.dtype} {image.shape}"
            )
        if mask.ndim != 2 or mask.shape != image.shape[:2]:
            raise ValueError(f"mask {index}: expected (H, W) = {image.shape[:2]}, got {mask.shape}")
        if not np.issubdtype(mask.dtype, np.integer) and mask.dtype != np.bool_:
            raise ValueError(f"mask {index}: expected integer class indices, got {mask.dtype}")
        if num_classes > 1 and mask.size and (mask.min() < 0 or mask.max() >= num_classes):
            raise ValueError(
                f"mask {index}: values must lie in [0, {num_classes - 1}], "
                f"got [{mask.min()}, {mask.max()}]"
            )


def _check_channel_order(channel_order: str, images: Sequence[np.ndarray]) -> None:
    if channel_order not in ("rgb", "bgr"):
        raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
    if channel_order == "bgr" and any(image.shape[2] < 3 for image in images):
        raise ValueError("channel_order 'bgr' needs images with at least 3 channels")


def _item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """Generator that depends only on (seed, epoch, index)."""
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, index]))


def _augment(
    augment: Any, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Apply a joint augmentation with randomness drawn from ``rng`` only."""
    if augment is None:
        return image, mask
    aug_seed = int(rng.integers(0, 2**63 - 1))
    if hasattr(augment, "set_random_state"):
        augment.set_random_state(np.random.default_rng(aug_seed), random.Random(aug_seed))
    out = augment(image=image, mask=mask)
    return out["image"], out["mask"]


def _to_tensors(
    image: np.ndarray, mask: np.ndarray, num_classes: int, channel_order: ChannelOrder
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (h, w, C) + (h, w) -> float32 (C, h, w) in [0, 1] + the mask tensor."""
    if channel_order == "bgr":
        image = np.concatenate([image[..., 2::-1], image[..., 3:]], axis=-1)
    image_t = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0)
    if num_classes == 1:
        mask_t = torch.from_numpy((mask > 0).astype(np.float32)[None])
    else:
        mask_t = torch.from_numpy(np.ascontiguousarray(mask).astype(np.int64))
    return image_t, mask_t


def _pad_to(
    image: np.ndarray, mask: np.ndarray, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Reflect-pad the image and zero-pad the mask, centred, up to at least ``size``."""
    pad_h = max(size[0] - image.shape[0], 0)
    pad_w = max(size[1] - image.shape[1], 0)
    if pad_h == 0 and pad_w == 0:
        return image, mask
    pads = ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2))
    mode = "reflect" if min(image.shape[:2]) > 1 else "edge"
    image = np.pad(image, (*pads, (0, 0)), mode=mode)
    mask = np.pad(mask, pads, mode="constant", constant_values=0)
    return image, mask


class PatchDataset(Dataset):
    """Random patches at native resolution, with foreground oversampling (nnU-Net style).

    Each item picks an image uniformly, then a patch: with probability
    ``foreground_oversample`` centred on a random foreground pixel of that image (clamped to
    stay inside the image; uniform if the image has no foreground), otherwise uniformly.
    Images smaller than the patch are reflect-padded (centred) once at construction; their
    masks are padded with 0. The patch is augmented after cropping.

    Args:
        images: ``uint8 (H, W, C)`` arrays (RGB for natural images).
        masks: ``(H, W)`` integer class-index masks matching ``images``.
        patch_size: Patch side or ``(h, w)``.
        samples_per_epoch: Number of items (the dataset's length).
        foreground_oversample: Fraction of patches centred on foreground, in [0, 1].
        augment: Joint augmentation called as ``augment(image=..., mask=...)`` (e.g. from
            :func:`~sa2_pipeline.dataloading.augmentation.build_augmentation`), or ``None``.
        seed: Base seed.
        channel_order: ``"rgb"`` keeps the channels; ``"bgr"`` reverses the first three.
        num_classes: 1 for binary masks (float32 ``(1, h, w)``), >= 2 for class indices
            (int64 ``(h, w)``).
        max_foreground_locations: Cap on stored foreground pixel locations per image (a fixed,
            seeded subsample beyond it), to bound memory.

    Raises:
        ValueError: On inconsistent images/masks or invalid arguments.
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        masks: Sequence[np.ndarray],
        patch_size: int | tuple[int, int],
        samples_per_epoch: int,
        *,
        foreground_oversample: float = 0.33,
        augment: Any = None,
        seed: int = 0,
        channel_order: ChannelOrder = "rgb",
        num_classes: int = 1,
        max_foreground_locations: int = 100_000,
    ) -> None:
        _validate_pairs(images, masks, num_classes)
        _check_channel_order(channel_order, images)
        if samples_per_epoch < 1:
            raise ValueError(f"samples_per_epoch must be >= 1, got {samples_per_epoch}")
        if not 0.0 <= foreground_oversample <= 1.0:
            raise ValueError(
                f"foreground_oversample must be in [0, 1], got {foreground_oversample}"
            )
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.patch_size = _as_size(patch_size, "patch_size")
        self.samples_per_epoch = int(samples_per_epoch)
        self.foreground_oversample = float(foreground_oversample)
        self.augment = augment
        self.seed = int(seed)
        self.channel_order: ChannelOrder = channel_order
        self.num_classes = int(num_classes)
        self.epoch = 0

        self.images: list[np.ndarray] = []
        self.masks: list[np.ndarray] = []
        self.foreground: list[np.ndarray] = []  # flat indices of foreground pixels per image
        location_rng = np.random.default_rng(np.random.SeedSequence([self.seed, 2**31]))
        padded = 0
        for image, mask in zip(images, masks, strict=True):
            image_p, mask_p = _pad_to(image, mask, self.patch_size)
            padded += image_p is not image
            locations = np.flatnonzero(mask_p)
            if locations.size > max_foreground_locations:
                locations = np.sort(
                    location_rng.choice(locations, max_foreground_locations, replace=False)
                )
            self.images.append(image_p)
            self.masks.append(mask_p)
            self.foreground.append(locations)
        logger.debug(
            "PatchDataset: %d images (%d padded to %s), %d samples per epoch",
            len(self.images),
            padded,
            self.patch_size,
            self.samples_per_epoch,
        )

    def __len__(self) -> int:
        return self.samples_per_epoch

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose samples the dataset returns (resuming: set the same epoch)."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    def sample_location(self, index: int) -> tuple[int, int, int, bool]:
        """Where item ``index`` of the current epoch is cut from.

        Returns:
            ``(image_index, top, left, foreground_centred)``.
        """
        rng = _item_rng(self.seed, self.epoch, index)
        return self._sample_location(rng)

    def _sample_location(self, rng: np.random.Generator) -> tuple[int, int, int, bool]:
        image_index = int(rng.integers(len(self.images)))
        height, width = self.images[image_index].shape[:2]
        patch_h, patch_w = self.patch_size
        want_foreground = rng.random() < self.foreground_oversample
        locations = self.foreground[image_index]
        if want_foreground and locations.size:
            centre = int(locations[rng.integers(locations.size)])
            cy, cx = divmod(centre, width)
            top = min(max(cy - patch_h // 2, 0), height - patch_h)
            left = min(max(cx - patch_w // 2, 0), width - patch_w)
            return image_index, top, left, True
        top = int(rng.integers(0, height - patch_h + 1))
        left = int(rng.integers(0, width - patch_w + 1))
        return image_index, top, left, False

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Patch ``index`` of the current epoch.

        Returns:
            ``(image float32 (C, h, w) in [0, 1], mask)``; mask float32 ``(1, h, w)`` for
            binary, int64 ``(h, w)`` for multi-class.
        """
        if not 0 <= index < self.samples_per_epoch:
            raise IndexError(f"index {index} out of range for {self.samples_per_epoch} samples")
        rng = _item_rng(self.seed, self.epoch, index)
        image_index, top, left, _ = self._sample_location(rng)
        patch_h, patch_w = self.patch_size
        image = self.images[image_index][top : top + patch_h, left : left + patch_w]
        mask = self.masks[image_index][top : top + patch_h, left : left + patch_w]
        image, mask = _augment(
            self.augment, np.ascontiguousarray(image), np.ascontiguousarray(mask), rng
        )
        return _to_tensors(image, mask, self.num_classes, self.channel_order)


def resize_pair(
    image: np.ndarray,
    mask: np.ndarray,
    size: int | tuple[int, int],
    *,
    mask_mode: Literal["bilinear_threshold", "nearest"] = "bilinear_threshold",
) -> tuple[np.ndarray, np.ndarray]:
    """Resize an image bilinearly and its mask as the release does (or nearest).

    ``"bilinear_threshold"`` (the release, binary 0/1 masks only): the mask is scaled to
    0/255 (as the release reads it from a PNG), resized with ``cv2.INTER_LINEAR`` in uint8
    and thresholded at > 0: every output pixel whose
    bilinear sample touches foreground becomes foreground (a slight dilation when
    upsampling; when downsampling cv2 samples only the 2x2 source neighbourhood).
    ``"nearest"`` keeps class indices and is required for multi-class masks.

    Args:
        image: ``uint8 (H, W, C)``.
        mask: ``(H, W)`` class indices.
        size: Output side or ``(h, w)``.
        mask_mode: ``"bilinear_threshold"`` or ``"nearest"``.

    Returns:
        ``(image uint8 (h, w, C), mask uint8 (h, w))``; the binary mask holds 0/1.

    Raises:
        ValueError: On a bad size or mode, or a mask with values > 1 and
            ``"bilinear_threshold"``.
    """
    height, width = _as_size(size, "size")
    if mask_mode not in ("bilinear_threshold", "nearest"):
        raise ValueError(f"mask_mode must be 'bilinear_threshold' or 'nearest', got {mask_mode!r}")
    if image.shape[:2] != mask.shape[:2]:
        raise ValueError(f"image {image.shape} and mask {mask.shape} differ in size")
    resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    if image.ndim == 3 and resized.ndim == 2:  # cv2 drops a single channel axis
        resized = resized[..., None]
    if mask_mode == "bilinear_threshold":
        if mask.size and mask.max() > 1:
            # Guard against silently binarising a multi-class mask.
            raise ValueError(
                f"mask_mode 'bilinear_threshold' is for binary 0/1 masks, got values up to "
                f"{mask.max()}; use mask_mode='nearest' for class indices"
            )
        scaled = (mask > 0).astype(np.uint8) * 255
        mask_r = (cv2.resize(scaled, (width, height), interpolation=cv2.INTER_LINEAR) > 0).astype(
            np.uint8
        )
    else:
        mask_r = cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
    return resized, mask_r


class ResizedDataset(Dataset):
    """Whole images resized to one size (the release's "paper" mode), augmented per item.

    Resizing happens once, in ``__init__`` (pairs already at ``size`` are kept as they are,
    so a cache of :func:`resize_pair` outputs can be passed in directly).

    Args:
        images: ``uint8 (H, W, C)`` arrays.
        masks: ``(H, W)`` class-index masks matching ``images``.
        size: Output side or ``(h, w)`` (the release: 224).
        augment: Joint augmentation or ``None``.
        seed: Base seed; item ``i`` of epoch ``e`` depends only on ``(seed, e, i)``.
        channel_order: ``"bgr"`` reverses the first three channels (the release's order).
        num_classes: 1 for binary (float32 ``(1, h, w)`` masks), >= 2 for int64 ``(h, w)``.
        mask_mode: How masks are resized (see :func:`resize_pair`); ``None`` picks
            ``"bilinear_threshold"`` for binary and ``"nearest"`` for multi-class.

    Raises:
        ValueError: On inconsistent images/masks or invalid arguments.
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        masks: Sequence[np.ndarray],
        size: int | tuple[int, int] = 224,
        *,
        augment: Any = None,
        seed: int = 0,
        channel_order: ChannelOrder = "rgb",
        num_classes: int = 1,
        mask_mode: Literal["bilinear_threshold", "nearest"] | None = None,
    ) -> None:
        _validate_pairs(images, masks, num_classes)
        _check_channel_order(channel_order, images)
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.size = _as_size(size, "size")
        if mask_mode is None:
            mask_mode = "bilinear_threshold" if num_classes == 1 else "nearest"
        if num_classes > 1 and mask_mode != "nearest":
            raise ValueError("multi-class masks must be resized with mask_mode='nearest'")
        self.augment = augment
        self.seed = int(seed)
        self.channel_order: ChannelOrder = channel_order
        self.num_classes = int(num_classes)
        self.epoch = 0
        self.images: list[np.ndarray] = []
        self.masks: list[np.ndarray] = []
        for raw_image, raw_mask in zip(images, masks, strict=True):
            # Binary: any nonzero value is foreground.
            mask = ((raw_mask > 0) if num_classes == 1 else raw_mask).astype(np.uint8)
            image = raw_image
            if image.shape[:2] != self.size:
                image, mask = resize_pair(image, mask, self.size, mask_mode=mask_mode)
            self.images.append(image)
            self.masks.append(mask)

    def __len__(self) -> int:
        return len(self.images)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose augmentations the dataset returns."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Resized (and augmented) image ``index``.

        Returns:
            ``(image float32 (C, h, w) in [0, 1], mask)``; mask float32 ``(1, h, w)`` for
            binary, int64 ``(h, w)`` for multi-class.
        """
        if not 0 <= index < len(self.images):
            raise IndexError(f"index {index} out of range for {len(self.images)} images")
        rng = _item_rng(self.seed, self.epoch, index)
        image, mask = _augment(self.augment, self.images[index], self.masks[index], rng)
        return _to_tensors(image, mask, self.num_classes, self.channel_order)
