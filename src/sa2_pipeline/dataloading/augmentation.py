"""Joint image/mask augmentation pipelines built by name from parameters (albumentations 2).

Names:
    ``"none"``: no augmentation (``None``).
    ``"paper"``: the release's augmentation (docs/protocol.md), see :class:`ReleaseRotFlipRotate`.
    ``"default"``: a histopathology set for training at native resolution: D4 symmetry, mild
    affine, brightness/contrast, colour (HSV or H&E stain) jitter, light blur or noise.

Randomness: albumentations 2 draws from the generators held by each transform. To make an
item reproducible, give all transforms ONE shared pair of generators, e.g.
``compose.set_random_state(np.random.default_rng(s), random.Random(s))`` (what the datasets
do). ``Compose.set_random_seed(s)`` instead seeds every transform with the same seed, so
the transforms' draws are identical and correlated (two ``p=0.5`` flips then always fire
together).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any, Literal

import albumentations as A
import cv2
import numpy as np
from scipy import ndimage

__all__ = ["AUGMENTATIONS", "ReleaseRotFlipRotate", "build_augmentation"]

logger = logging.getLogger(__name__)


class ReleaseRotFlipRotate(A.DualTransform):
    """The release's geometric augmentation, drawn exactly as its ``RandomGenerator`` does.

    With probability ``rot_flip_p``: ``np.rot90`` by ``k`` in 0..3 quarter turns, always
    followed by a flip along a random axis (0 = rows, 1 = columns). Otherwise, with
    probability ``rotate_p``: ``scipy.ndimage.rotate`` by an integer angle drawn from
    ``angle_range`` (inclusive; the release's ``np.random.randint(-20, 20)`` is [-20, 19]),
    nearest neighbour (``order=0``), same output size, zero fill, for image and mask alike.
    Otherwise nothing. With the defaults: 0.5 rot90 + flip, 0.25 rotation, 0.25 unchanged.
    The release's inputs are square (224 x 224); on a non-square input an odd ``k`` swaps
    height and width.

    Args:
        rot_flip_p: Probability of the rot90 + flip branch.
        rotate_p: Probability of the rotation branch when the first did not fire.
        angle_range: Inclusive integer bounds of the rotation angle in degrees.
        p: Probability of applying the transform at all (keep 1.0 for the release).
    """

    def __init__(
        self,
        rot_flip_p: float = 0.5,
        rotate_p: float = 0.5,
        angle_range: tuple[int, int] = (-20, 19),
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p)
        for name, value in (("rot_flip_p", rot_flip_p), ("rotate_p", rotate_p)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        low, high = (int(v) for v in angle_range)
        if low > high:
            raise ValueError(f"angle_range must be (low, high) with low <= high, got {angle_range}")
        self.rot_flip_p = float(rot_flip_p)
        self.rotate_p = float(rotate_p)
        self.angle_range = (low, high)

    def get_params(self) -> dict[str, Any]:
        """Draw the branch and its parameters from this transform's generator."""
        if self.py_random.random() < self.rot_flip_p:
            return {
                "mode": "rot_flip",
                "k": self.py_random.randint(0, 3),
                "axis": self.py_random.randint(0, 1),
                "angle": 0,
            }
        if self.py_random.random() < self.rotate_p:
            return {
                "mode": "rotate",
                "k": 0,
                "axis": 0,
                "angle": self.py_random.randint(*self.angle_range),
            }
        return {"mode": "identity", "k": 0, "axis": 0, "angle": 0}

    @staticmethod
    def _transform(array: np.ndarray, mode: str, k: int, axis: int, angle: int) -> np.ndarray:
        if mode == "rot_flip":
            return np.ascontiguousarray(np.flip(np.rot90(array, k, axes=(0, 1)), axis=axis))
        if mode == "rotate" and angle != 0:
            # Rotation in the (rows, cols) plane, about the centre; channels untouched.
            return ndimage.rotate(
                array, angle, axes=(1, 0), reshape=False, order=0, mode="constant", cval=0
            )
        return array

    def apply(
        self, img: np.ndarray, mode: str, k: int, axis: int, angle: int, **params: Any
    ) -> np.ndarray:
        """Transform an image ``(H, W, C)``."""
        return self._transform(img, mode, k, axis, angle)

    def apply_to_mask(
        self, mask: np.ndarray, mode: str, k: int, axis: int, angle: int, **params: Any
    ) -> np.ndarray:
        """Transform a mask ``(H, W)`` with the same parameters (nearest neighbour)."""
        return self._transform(mask, mode, k, axis, angle)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        """Constructor arguments shown in ``repr`` and serialisation."""
        return ("rot_flip_p", "rotate_p", "angle_range")


def _build_none() -> None:
    return None


def _build_paper(
    *,
    rot_flip_p: float = 0.5,
    rotate_p: float = 0.5,
    angle_range: tuple[int, int] = (-20, 19),
) -> A.Compose:
    return A.Compose(
        [
            ReleaseRotFlipRotate(
                rot_flip_p=rot_flip_p, rotate_p=rotate_p, angle_range=tuple(angle_range)
            )
        ]
    )


def _colour_jitter(
    colour: str, hue_shift_limit: float, sat_shift_limit: float, val_shift_limit: float,
    p: float,
) -> list[A.BasicTransform]:
    """The colour step of the default set: HSV jitter, H&E stain jitter, or nothing."""
    if colour == "hsv":
        return [
            A.HueSaturationValue(
                hue_shift_limit=hue_shift_limit,
                sat_shift_limit=sat_shift_limit,
                val_shift_limit=val_shift_limit,
                p=p,
            )
        ]
    if colour == "he_stain":
        return [A.HEStain(method="random_preset", p=p)]
    return []


def _blur_or_noise(
    blur_sigma: tuple[float, float], noise_std: tuple[float, float], p: float
) -> A.OneOf:
    """Light Gaussian blur or Gaussian noise, one of the two, with probability ``p``."""
    return A.OneOf(
        [
            A.GaussianBlur(blur_limit=0, sigma_limit=tuple(blur_sigma), p=1.0),
            A.GaussNoise(std_range=tuple(noise_std), p=1.0),
        ],
        p=p,
    )


def _build_default(
    *,
    d4: bool = True,
    affine_p: float = 0.5,
    scale_limit: float = 0.15,
    rotate_limit: float = 20.0,
    brightness_limit: float = 0.15,
    contrast_limit: float = 0.15,
    brightness_contrast_p: float = 0.5,
    colour: Literal["hsv", "he_stain", "none"] = "hsv",
    hue_shift_limit: float = 8.0,
    sat_shift_limit: float = 15.0,
    val_shift_limit: float = 8.0,
    colour_p: float = 0.5,
    blur_noise_p: float = 0.2,
    blur_sigma: tuple[float, float] = (0.3, 1.0),
    noise_std: tuple[float, float] = (0.01, 0.04),
) -> A.Compose:
    if colour not in ("hsv", "he_stain", "none"):
        raise ValueError(f"colour must be one of 'hsv', 'he_stain', 'none', got {colour!r}")
    if not 0.0 <= scale_limit < 1.0:
        raise ValueError(f"scale_limit must be in [0, 1), got {scale_limit}")
    transforms: list[A.BasicTransform] = []
    if d4:
        transforms.append(A.D4(p=1.0))
    transforms.append(
        A.Affine(
            scale=(1.0 - scale_limit, 1.0 + scale_limit),
            rotate=(-rotate_limit, rotate_limit),
            interpolation=cv2.INTER_LINEAR,
            mask_interpolation=cv2.INTER_NEAREST,
            # Reflect image and mask alike: no artificial black corners in tissue.
            border_mode=cv2.BORDER_REFLECT_101,
            p=affine_p,
        )
    )
    transforms.append(
        A.RandomBrightnessContrast(
            brightness_limit=brightness_limit,
            contrast_limit=contrast_limit,
            p=brightness_contrast_p,
        )
    )
    transforms += _colour_jitter(
        colour, hue_shift_limit, sat_shift_limit, val_shift_limit, colour_p
    )
    transforms.append(_blur_or_noise(blur_sigma, noise_std, blur_noise_p))
    return A.Compose(transforms)


AUGMENTATIONS: dict[str, Callable[..., A.Compose | None]] = {
    "none": _build_none,
    "paper": _build_paper,
    "default": _build_default,
}


def build_augmentation(name: str, **kw: Any) -> A.Compose | None:
    """Build a joint image/mask augmentation pipeline by name.

    The result is called as ``aug(image=uint8 (H, W, C), mask=uint8 (H, W))`` and returns a
    dict with the transformed ``image`` and ``mask``.

    Args:
        name: One of ``"none"``, ``"paper"``, ``"default"``.
        **kw: Parameters of that pipeline. ``"paper"``: ``rot_flip_p``, ``rotate_p``,
            ``angle_range``. ``"default"``: ``d4``, ``affine_p``, ``scale_limit``,
            ``rotate_limit``, ``brightness_limit``, ``contrast_limit``,
            ``brightness_contrast_p``, ``colour`` (``"hsv"`` | ``"he_stain"`` | ``"none"``),
            ``hue_shift_limit``, ``sat_shift_limit``, ``val_shift_limit``, ``colour_p``,
            ``blur_noise_p``, ``blur_sigma``, ``noise_std``.

    Returns:
        An ``albumentations.Compose``, or ``None`` for ``"none"``.

    Raises:
        ValueError: For an unknown name, an unknown parameter or an invalid value.
    """
    if name not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {name!r}; valid names: {sorted(AUGMENTATIONS)}")
    builder = AUGMENTATIONS[name]
    allowed = list(inspect.signature(builder).parameters)
    unknown = sorted(set(kw) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {unknown} for augmentation {name!r}; allowed: {allowed}"
        )
    augment = builder(**kw)
    logger.debug("Built augmentation %r: %r", name, augment)
    return augment
