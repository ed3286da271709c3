"""Sliding-window inference: equivalence with a full forward, TTA, padding, mode restoring."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sa2_pipeline.inference.sliding_window import (
    gaussian_importance_map,
    predict_image,
    predict_sliding_window,
    sliding_window_starts,
)


def _pointwise_model(out_channels: int = 1, seed: int = 0) -> nn.Conv2d:
    """1x1 convolution with fixed weights: translation-equivariant and D4-equivariant."""
    generator = torch.Generator().manual_seed(seed)
    conv = nn.Conv2d(3, out_channels, kernel_size=1)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator))
        conv.bias.copy_(torch.randn(conv.bias.shape, generator=generator))
    return conv


class _Recorder(nn.Module):
    """Wraps a model and records the input shapes it sees."""

    def __init__(self, model: nn.Module, as_tuple: bool = False) -> None:
        super().__init__()
        self.model = model
        self.as_tuple = as_tuple
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor):
        self.shapes.append(tuple(x.shape))
        out = self.model(x)
        return (out, out * 0 - 100) if self.as_tuple else out


def test_window_starts_and_gaussian_map():
    assert sliding_window_starts(100, 32, 0.5) == [0, 14, 27, 41, 54, 68]
    assert sliding_window_starts(32, 32, 0.5) == [0]
    assert sliding_window_starts(64, 32, 0.0) == [0, 32]
    weights = gaussian_importance_map((32, 20))
    assert weights.shape == (32, 20) and weights.max().item() == pytest.approx(1.0, rel=1e-3)
    assert (weights > 0).all()
    torch.testing.assert_close(weights, weights.flip(0))
    torch.testing.assert_close(weights, weights.flip(1))


@pytest.mark.parametrize("gaussian", [True, False])
def test_matches_full_image_forward_for_odd_sizes(gaussian):
    torch.manual_seed(0)
    model = _Recorder(_pointwise_model())
    image = torch.rand(3, 100, 77)
    with torch.no_grad():
        expected = torch.sigmoid(model.model(image[None]))
    probs = predict_sliding_window(
        model, image, patch_size=32, overlap=0.5, batch_size=4, gaussian=gaussian, border=0
    )  # border=0: the tile count below is that of the image itself
    assert probs.shape == (1, 1, 100, 77) and probs.dtype == torch.float32
    torch.testing.assert_close(probs, expected, atol=1e-5, rtol=0)
    # Tiles are batched: 6 x 4 tiles (starts along 77: 0, 15, 30, 45) in batches of 4.
    assert len(model.shapes) == 6
    assert all(shape[0] <= 4 and shape[1:] == (3, 32, 32) for shape in model.shapes)


def test_multiclass_softmax_and_batch_of_images():
    model = _pointwise_model(out_channels=3, seed=1)
    images = torch.rand(2, 3, 45, 61)
    probs = predict_sliding_window(model, images, patch_size=(24, 32), overlap=0.25, num_classes=3)
    with torch.no_grad():
        expected = torch.softmax(model(images), dim=1)
    torch.testing.assert_close(probs, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(2, 45, 61), atol=1e-5, rtol=0)


def _symmetric_kernel_model() -> nn.Sequential:
    """D4-symmetric 3x3 conv (zero padding), ReLU, 1x1 conv: a D4-equivariant model."""
    conv = nn.Conv2d(3, 4, kernel_size=3, padding=1)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        a, b, c = (torch.randn(4, 3, 1, 1, generator=generator) for _ in range(3))
        corner, edge, centre = a.expand(4, 3, 1, 1), b.expand(4, 3, 1, 1), c.expand(4, 3, 1, 1)
        kernel = torch.cat(
            [
                torch.cat([corner, edge, corner], dim=3),
                torch.cat([edge, centre, edge], dim=3),
                torch.cat([corner, edge, corner], dim=3),
            ],
            dim=2,
        )
        conv.weight.copy_(kernel)
    return nn.Sequential(conv, nn.ReLU(), nn.Conv2d(4, 1, kernel_size=1))


@pytest.mark.parametrize(("tta", "patch"), [("d4", 32), (True, 32), ("flips", (32, 24))])
def test_tta_with_equivariant_model_equals_no_tta(tta, patch):
    model = _symmetric_kernel_model()
    image = torch.rand(3, 70, 53)
    plain = predict_sliding_window(model, image, patch_size=patch, tta=False)
    augmented = predict_sliding_window(model, image, patch_size=patch, tta=tta)
    torch.testing.assert_close(augmented, plain, atol=1e-5, rtol=0)


def test_tta_inverse_transforms_are_exact():
    # A model that shifts its input one pixel to the left (out[i, j] = x[i, j + 1], zero padded).
    # Conjugated by the 8 D4 transforms it shifts in each of the 4 directions twice, so D4 TTA
    # must equal the mean of the 4 shifted sigmoids.
    shift = nn.Conv2d(1, 1, kernel_size=3, padding=1, bias=False)
    with torch.no_grad():
        shift.weight.zero_()
        shift.weight[0, 0, 1, 2] = 1.0
    image = torch.randn(1, 16, 16)
    probs = predict_sliding_window(shift, image, patch_size=None, tta="d4", border=0)
    padded = F.pad(image, (1, 1, 1, 1))
    neighbours = [
        padded[:, 1:-1, 2:],
        padded[:, 1:-1, :-2],
        padded[:, 2:, 1:-1],
        padded[:, :-2, 1:-1],
    ]
    expected = torch.stack([torch.sigmoid(n) for n in neighbours]).mean(dim=0)
    torch.testing.assert_close(probs[0], expected, atol=1e-6, rtol=0)
    flips = predict_sliding_window(shift, image, patch_size=None, tta="flips", border=0)
    # Flips only: the shift is conjugated into left and right shifts (twice each), never up/down.
    expected_flips = torch.stack([torch.sigmoid(n) for n in neighbours[:2]]).mean(dim=0)
    torch.testing.assert_close(flips[0], expected_flips, atol=1e-6, rtol=0)


def test_model_modes_are_restored():
    model = nn.Sequential(_pointwise_model(), nn.Dropout(0.5))
    model.train()
    model[1].eval()  # a caller's mixed modes survive too
    seen = []
    model[0].register_forward_hook(lambda module, args, out: seen.append(module.training))
    predict_sliding_window(model, torch.rand(3, 40, 40), patch_size=32)
    assert seen and not any(seen)
    assert model.training and model[0].training and not model[1].training


def test_small_image_is_padded_to_one_patch():
    model = _Recorder(_pointwise_model(), as_tuple=True)  # deep-supervision style output
    image = torch.rand(3, 10, 13)
    probs = predict_sliding_window(model, image, patch_size=32, tta=False)
    assert model.shapes == [(1, 3, 32, 32)]
    with torch.no_grad():
        expected = torch.sigmoid(model.model(image[None]))
    assert probs.shape == (1, 1, 10, 13)
    torch.testing.assert_close(probs, expected, atol=1e-5, rtol=0)
    # One dimension smaller than the patch, the other larger.
    probs_mixed = predict_sliding_window(model, torch.rand(3, 20, 70), patch_size=32)
    assert probs_mixed.shape == (1, 1, 20, 70)


def test_autocast_bfloat16_is_close():
    model = _pointwise_model()
    image = torch.rand(3, 40, 50)
    plain = predict_sliding_window(model, image, patch_size=32)
    low = predict_sliding_window(model, image, patch_size=32, precision="bf16")
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, plain, atol=2e-2, rtol=0)


def test_predict_image_from_uint8():
    model = _pointwise_model()
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (37, 41, 3), dtype=np.uint8)
    probs = predict_image(model, image, patch_size=16)
    assert probs.shape == (1, 37, 41) and probs.dtype == np.float32
    tensor = torch.from_numpy(image).permute(2, 0, 1).float()[None] / 255.0
    with torch.no_grad():
        expected = torch.sigmoid(model(tensor))[0].numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    probs_bgr = predict_image(model, image, patch_size=16, channel_order="bgr")
    with torch.no_grad():
        expected_bgr = torch.sigmoid(model(tensor.flip(1)))[0].numpy()
    np.testing.assert_allclose(probs_bgr, expected_bgr, atol=1e-5)


def test_errors():
    model = _pointwise_model(out_channels=2)
    with pytest.raises(ValueError, match="num_classes=1"):
        predict_sliding_window(model, torch.rand(3, 20, 20), patch_size=16)
    with pytest.raises(ValueError, match="overlap"):
        predict_sliding_window(
            model, torch.rand(3, 20, 20), patch_size=16, overlap=1.0, num_classes=2
        )
    with pytest.raises(ValueError, match="float"):
        predict_sliding_window(
            model, torch.zeros(3, 20, 20, dtype=torch.uint8), patch_size=16, num_classes=2
        )
    with pytest.raises(ValueError, match="square"):
        predict_sliding_window(
            model, torch.rand(3, 20, 20), patch_size=(16, 12), tta="d4", num_classes=2
        )
    with pytest.raises(ValueError, match="tta"):
        predict_sliding_window(
            model, torch.rand(3, 20, 20), patch_size=16, tta="rot", num_classes=2
        )
    with pytest.raises(ValueError, match="uint8"):
        predict_image(model, np.zeros((8, 8, 3), dtype=np.float32), patch_size=8, num_classes=2)
