"""PatchDataset and ResizedDataset: determinism, sampling, padding, resizing, dtypes."""

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from sa2_pipeline.dataloading.augmentation import build_augmentation
from sa2_pipeline.dataloading.dataset import PatchDataset, ResizedDataset, resize_pair


def _images_and_masks(sizes=((96, 80), (70, 120)), seed=0):
    rng = np.random.default_rng(seed)
    images, masks = [], []
    for height, width in sizes:
        images.append(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        mask = np.zeros((height, width), dtype=np.uint8)
        mask[10:18, 20:30] = 1  # a small foreground object
        masks.append(mask)
    return images, masks


def _all_items(dataset):
    return [dataset[i] for i in range(len(dataset))]


def _assert_items_equal(first, second):
    assert len(first) == len(second)
    for (image_a, mask_a), (image_b, mask_b) in zip(first, second, strict=True):
        torch.testing.assert_close(image_a, image_b, rtol=0, atol=0)
        torch.testing.assert_close(mask_a, mask_b, rtol=0, atol=0)


def test_patch_outputs_binary():
    images, masks = _images_and_masks()
    dataset = PatchDataset(images, masks, patch_size=(32, 48), samples_per_epoch=5)
    image, mask = dataset[0]
    assert len(dataset) == 5
    assert image.dtype == torch.float32 and image.shape == (3, 32, 48)
    assert image.min() >= 0.0 and image.max() <= 1.0
    assert mask.dtype == torch.float32 and mask.shape == (1, 32, 48)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}


def test_patch_outputs_multiclass_and_bgr():
    images, masks = _images_and_masks()
    masks[0][40:50, 40:50] = 2
    rgb = PatchDataset(images, masks, patch_size=32, samples_per_epoch=3, num_classes=3)
    bgr = PatchDataset(
        images, masks, patch_size=32, samples_per_epoch=3, num_classes=3, channel_order="bgr"
    )
    image, mask = rgb[1]
    assert mask.dtype == torch.int64 and mask.shape == (32, 32)
    image_bgr, _ = bgr[1]
    torch.testing.assert_close(image_bgr, image.flip(0))


def test_patch_matches_source_pixels():
    images, masks = _images_and_masks()
    dataset = PatchDataset(images, masks, patch_size=32, samples_per_epoch=8, seed=3)
    for index in range(8):
        image_index, top, left, _ = dataset.sample_location(index)
        image, mask = dataset[index]
        expected = images[image_index][top : top + 32, left : left + 32].transpose(2, 0, 1) / 255.0
        np.testing.assert_allclose(image.numpy(), expected, atol=1e-7)
        np.testing.assert_array_equal(
            mask[0].numpy(), masks[image_index][top : top + 32, left : left + 32]
        )


def test_patch_determinism_across_instances_epochs_and_order():
    images, masks = _images_and_masks()
    augment = build_augmentation("paper")

    def make(seed=7):
        return PatchDataset(images, masks, 32, samples_per_epoch=12, augment=augment, seed=seed)

    first, second = make(), make()
    items = _all_items(first)
    _assert_items_equal(items, _all_items(second))
    # Fetch order does not matter.
    _assert_items_equal(items[::-1], [second[i] for i in reversed(range(12))])
    # Another epoch differs; coming back to the epoch reproduces it (resume).
    second.set_epoch(1)
    epoch_1 = _all_items(second)
    assert any(not torch.equal(a[0], b[0]) for a, b in zip(items, epoch_1, strict=True))
    resumed = make()
    resumed.set_epoch(1)
    _assert_items_equal(epoch_1, _all_items(resumed))
    # Another seed differs.
    assert any(
        not torch.equal(a[0], b[0]) for a, b in zip(items, _all_items(make(seed=8)), strict=True)
    )


def _loader_batches(dataset, num_workers):
    loader = DataLoader(dataset, batch_size=4, shuffle=False, num_workers=num_workers)
    return [(images.clone(), masks.clone()) for images, masks in loader]


def test_patch_determinism_across_worker_counts():
    images, masks = _images_and_masks()
    dataset = PatchDataset(
        images, masks, 32, samples_per_epoch=16, augment=build_augmentation("default"), seed=11
    )
    dataset.set_epoch(2)
    single = _loader_batches(dataset, num_workers=0)
    multi = _loader_batches(dataset, num_workers=2)
    _assert_items_equal(single, multi)


def test_foreground_oversampling_raises_foreground_fraction():
    images, masks = _images_and_masks(sizes=((160, 160),))

    def mean_foreground(oversample):
        dataset = PatchDataset(
            images, masks, 32, samples_per_epoch=200, foreground_oversample=oversample, seed=1
        )
        fractions = [dataset[i][1].mean().item() for i in range(len(dataset))]
        hits = [dataset.sample_location(i)[3] for i in range(len(dataset))]
        return float(np.mean(fractions)), float(np.mean(hits)), fractions

    uniform, uniform_hits, _ = mean_foreground(0.0)
    default, default_hits, _ = mean_foreground(0.33)
    forced, forced_hits, forced_fractions = mean_foreground(1.0)
    assert uniform_hits == 0.0 and forced_hits == 1.0
    assert default_hits == pytest.approx(0.33, abs=0.1)
    assert uniform < default < forced
    assert min(forced_fractions) > 0  # every forced patch contains the object


def test_small_images_are_reflect_padded():
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    mask = np.ones((20, 30), dtype=np.uint8)
    dataset = PatchDataset([image], [mask], patch_size=(32, 48), samples_per_epoch=4)
    out_image, out_mask = dataset[0]
    expected_image = np.pad(image, ((6, 6), (9, 9), (0, 0)), mode="reflect")
    np.testing.assert_allclose(
        out_image.numpy(), expected_image.transpose(2, 0, 1) / 255.0, atol=1e-7
    )
    expected_mask = np.pad(mask, ((6, 6), (9, 9)))
    np.testing.assert_array_equal(out_mask[0].numpy(), expected_mask)
    # Far smaller than the patch (more than one reflection) still works.
    tiny = PatchDataset([image[:5, :4]], [mask[:5, :4]], patch_size=16, samples_per_epoch=1)
    assert tiny[0][0].shape == (3, 16, 16)
    assert tiny[0][1].sum().item() == 20


def test_patch_dataset_errors():
    images, masks = _images_and_masks()
    with pytest.raises(ValueError, match="2 images but 1 masks"):
        PatchDataset(images, masks[:1], 32, 4)
    with pytest.raises(ValueError, match="channel_order"):
        PatchDataset(images, masks, 32, 4, channel_order="hsv")
    with pytest.raises(ValueError, match="foreground_oversample"):
        PatchDataset(images, masks, 32, 4, foreground_oversample=1.5)
    with pytest.raises(ValueError, match=r"values must lie in \[0, 1\]"):
        PatchDataset(images, [m * 2 for m in masks], 32, 4, num_classes=2)
    with pytest.raises(ValueError, match="uint8"):
        PatchDataset([images[0].astype(np.float32)], masks[:1], 32, 4)
    with pytest.raises(IndexError):
        PatchDataset(images, masks, 32, 4)[4]


def test_resize_pair_follows_the_release():
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    mask = np.zeros((50, 70), dtype=np.uint8)
    mask[10:13, 30:33] = 1
    image_r, mask_r = resize_pair(image, mask, 24)
    np.testing.assert_array_equal(
        image_r, cv2.resize(image, (24, 24), interpolation=cv2.INTER_LINEAR)
    )
    release = cv2.resize(mask * 255, (24, 24), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(mask_r, (release > 0).astype(np.uint8))
    assert mask_r.dtype == np.uint8 and set(np.unique(mask_r)) == {0, 1}
    # Upsampling: bilinear-then-threshold marks every output pixel whose interpolation touches
    # foreground, a slight dilation compared with nearest.
    nearest = resize_pair(image, mask, (100, 140), mask_mode="nearest")[1]
    assert nearest.shape == (100, 140) and nearest.sum() == 36
    assert resize_pair(image, mask, (100, 140))[1].sum() > nearest.sum()
    # Class indices are never binarised silently.
    with pytest.raises(ValueError, match="nearest"):
        resize_pair(image, mask * 2, 24)
    assert set(np.unique(resize_pair(image, mask * 2, 24, mask_mode="nearest")[1])) == {0, 2}


def test_resized_dataset_outputs_and_bgr():
    images, masks = _images_and_masks()
    masks[1] = masks[1] * 255  # binary datasets accept any nonzero as foreground
    dataset = ResizedDataset(images, masks, size=32, channel_order="bgr")
    assert len(dataset) == 2
    image, mask = dataset[1]
    assert image.shape == (3, 32, 32) and mask.shape == (1, 32, 32) and mask.dtype == torch.float32
    expected = cv2.resize(images[1], (32, 32), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(image[0].numpy(), expected[..., 2] / 255.0, atol=1e-7)
    np.testing.assert_allclose(image[2].numpy(), expected[..., 0] / 255.0, atol=1e-7)


def test_resized_dataset_keeps_cached_pairs_and_is_deterministic():
    images, masks = _images_and_masks()
    cached = [resize_pair(image, mask, 32) for image, mask in zip(images, masks, strict=True)]
    from_cache = ResizedDataset([c[0] for c in cached], [c[1] for c in cached], size=32)
    from_raw = ResizedDataset(images, masks, size=32)
    _assert_items_equal(_all_items(from_cache), _all_items(from_raw))

    augment = build_augmentation("paper")
    first = ResizedDataset(images * 4, masks * 4, size=32, augment=augment, seed=3)
    second = ResizedDataset(images * 4, masks * 4, size=32, augment=augment, seed=3)
    items = _all_items(first)
    _assert_items_equal(items, [second[i] for i in range(8)])
    second.set_epoch(5)
    assert any(not torch.equal(a[0], b[0]) for a, b in zip(items, _all_items(second), strict=True))


def test_resized_dataset_multiclass_uses_nearest():
    images, masks = _images_and_masks()
    masks[0][50:60, 50:60] = 2
    dataset = ResizedDataset(images, masks, size=48, num_classes=3)
    _, mask = dataset[0]
    assert mask.dtype == torch.int64 and mask.shape == (48, 48)
    assert set(mask.unique().tolist()) == {0, 1, 2}
    with pytest.raises(ValueError, match="nearest"):
        ResizedDataset(images, masks, size=48, num_classes=3, mask_mode="bilinear_threshold")
