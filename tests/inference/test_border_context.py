"""An empty image predicts no foreground at its borders (issue: the left-edge artefact).

A convolution's zero padding puts a black frame around every tile; on a white (empty)
image the edge then reads as the edge of a dark object, and trained models marked the
outer columns as foreground. Models built here react to zero padding the way those did:
an all-ones kernel (every border), and a kernel reading only its left column (the left
edge alone, as the trained SA2-Net did).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sa2_pipeline.inference.sliding_window import predict_sliding_window


def _padding_detector(kernel: torch.Tensor, threshold: float) -> nn.Module:
    """Logit = threshold - (kernel * image): positive where the kernel reads zero padding."""
    conv = nn.Conv2d(3, 1, kernel_size=3, padding=1, bias=True)
    with torch.no_grad():
        conv.weight.copy_(kernel.expand(1, 3, 3, 3))
        conv.bias.fill_(threshold)
    return conv


ALL_BORDERS = -torch.ones(3, 3)
LEFT_ONLY = torch.zeros(3, 3)
LEFT_ONLY[:, 0] = -1.0


@pytest.mark.parametrize(("kernel", "threshold"), [(ALL_BORDERS, 24.0), (LEFT_ONLY, 3.0)],
                         ids=["all-borders", "left-edge"])
@pytest.mark.parametrize("size", [(512, 512), (256, 256), (300, 173), (40, 40)])
def test_empty_image_has_no_foreground_at_its_borders(kernel, threshold, size) -> None:
    model = _padding_detector(kernel, threshold)
    white = torch.ones(3, *size)
    probs = predict_sliding_window(model, white, patch_size=256, overlap=0.5)[0, 0]
    assert probs.shape == size
    assert (probs < 0.5).all(), f"foreground at {torch.nonzero(probs >= 0.5)[:5].tolist()}"
    # border = interior: the edge pixels see mirrored image, not a black frame
    torch.testing.assert_close(probs[:, :2], probs[:, size[1] // 2 : size[1] // 2 + 2])


def test_without_context_the_artefact_is_there() -> None:
    """The control: the same model and image with border=0 (zero padding at the edge)."""
    model = _padding_detector(LEFT_ONLY, 3.0)
    probs = predict_sliding_window(model, torch.ones(3, 512, 512), patch_size=256,
                                   border=0)[0, 0]
    assert (probs[:, 0] > 0.5).all() and (probs[:, 1:] < 0.5).all()


def test_interior_predictions_do_not_change() -> None:
    torch.manual_seed(0)
    model = _padding_detector(torch.randn(3, 3), 0.0)
    image = torch.rand(3, 300, 211)
    with_context = predict_sliding_window(model, image, patch_size=64)[0, 0]
    without = predict_sliding_window(model, image, patch_size=64, border=0)[0, 0]
    # equal up to the tiles' own (Gaussian down-weighted) zero padding, now placed elsewhere
    torch.testing.assert_close(with_context[1:-1, 1:-1], without[1:-1, 1:-1], atol=2e-3,
                               rtol=0)


def test_border_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="border must be >= 0"):
        predict_sliding_window(nn.Identity(), torch.ones(1, 32, 32), patch_size=32, border=-1)
