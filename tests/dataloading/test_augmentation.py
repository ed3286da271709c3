"""Augmentation pipelines: the release's ("paper"), the default set, errors."""

import random

import albumentations as A
import numpy as np
import pytest
from scipy import ndimage

from sa2_pipeline.dataloading.augmentation import ReleaseRotFlipRotate, build_augmentation


def _seed(augment: A.Compose, seed: int) -> None:
    augment.set_random_state(np.random.default_rng(seed), random.Random(seed))


@pytest.fixture
def image_and_mask():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    mask = (image[..., 0] > 127).astype(np.uint8)  # derived from the image
    return image, mask


def test_none_gives_none():
    assert build_augmentation("none") is None


def test_paper_keeps_image_and_mask_aligned(image_and_mask):
    image, mask = image_and_mask
    augment = build_augmentation("paper")
    modes = set()
    for seed in range(60):
        _seed(augment, seed)
        out = augment(image=image, mask=mask)
        modes.add(augment.transforms[0].get_applied_params()["mode"])
        assert out["image"].shape == image.shape
        assert out["mask"].shape == mask.shape
        assert out["image"].dtype == np.uint8 and out["mask"].dtype == np.uint8
        # Nearest-neighbour everywhere and zero fill on both: the mask still follows the image.
        np.testing.assert_array_equal(out["mask"], (out["image"][..., 0] > 127).astype(np.uint8))
    assert modes == {"rot_flip", "rotate", "identity"}


def test_paper_branch_probabilities_and_angles(image_and_mask):
    image, mask = image_and_mask
    small_image, small_mask = image[:8, :8], mask[:8, :8]
    augment = build_augmentation("paper")
    _seed(augment, 123)
    counts = {"rot_flip": 0, "rotate": 0, "identity": 0}
    unchanged = 0
    angles = set()
    draws = 2000
    for _ in range(draws):
        out = augment(image=small_image, mask=small_mask)
        params = augment.transforms[0].get_applied_params()
        counts[params["mode"]] += 1
        if params["mode"] == "rotate":
            angles.add(params["angle"])
        unchanged += np.array_equal(out["image"], small_image)
    assert counts["rot_flip"] / draws == pytest.approx(0.5, abs=0.05)
    assert counts["rotate"] / draws == pytest.approx(0.25, abs=0.05)
    assert counts["identity"] / draws == pytest.approx(0.25, abs=0.05)
    # Unchanged: the identity branch plus the rare 0 degree rotation (0.25 + 0.25 / 40).
    assert unchanged / draws == pytest.approx(0.25, abs=0.05)
    assert angles == set(range(-20, 20))  # integers in [-20, 19]


def test_release_branches_match_numpy_and_scipy(image_and_mask):
    image, _ = image_and_mask
    transform = ReleaseRotFlipRotate()
    rotated = transform.apply(image, mode="rotate", k=0, axis=0, angle=13)
    expected = ndimage.rotate(image, 13, reshape=False, order=0, mode="constant", cval=0)
    np.testing.assert_array_equal(rotated, expected)
    flipped = transform.apply(image, mode="rot_flip", k=3, axis=1, angle=0)
    np.testing.assert_array_equal(flipped, np.flip(np.rot90(image, 3), axis=1))


def test_default_pipeline_shapes_and_mask_values(image_and_mask):
    image, mask = image_and_mask
    augment = build_augmentation("default", colour="he_stain", blur_noise_p=1.0)
    assert isinstance(augment, A.Compose)
    for seed in range(10):
        _seed(augment, seed)
        out = augment(image=image, mask=mask)
        assert out["image"].shape == image.shape and out["image"].dtype == np.uint8
        assert out["mask"].shape == mask.shape
        assert set(np.unique(out["mask"])) <= {0, 1}


def test_default_geometry_moves_mask_with_image():
    # A pure D4 + affine pipeline: the foreground square moves but keeps its area roughly.
    augment = build_augmentation(
        "default",
        colour="none",
        brightness_contrast_p=0.0,
        blur_noise_p=0.0,
        affine_p=1.0,
        scale_limit=0.0,
    )
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    image[4:12, 20:28] = 255
    mask = (image[..., 0] > 0).astype(np.uint8)
    for seed in range(10):
        _seed(augment, seed)
        out = augment(image=image, mask=mask)
        agreement = np.mean(out["mask"] == (out["image"][..., 0] > 127))
        assert agreement > 0.97


def test_same_seed_same_result(image_and_mask):
    image, mask = image_and_mask
    augment = build_augmentation("default")
    _seed(augment, 5)
    first = augment(image=image, mask=mask)
    _seed(augment, 5)
    second = augment(image=image, mask=mask)
    np.testing.assert_array_equal(first["image"], second["image"])
    np.testing.assert_array_equal(first["mask"], second["mask"])


def test_errors():
    with pytest.raises(ValueError, match=r"valid names: \['default', 'none', 'paper'\]"):
        build_augmentation("fancy")
    with pytest.raises(ValueError, match="unknown parameter"):
        build_augmentation("paper", rotate_limit=10)
    with pytest.raises(ValueError, match="colour"):
        build_augmentation("default", colour="rainbow")
    with pytest.raises(ValueError, match="rot_flip_p"):
        build_augmentation("paper", rot_flip_p=2.0)
