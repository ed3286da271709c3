"""The shared model tail: input check, padding, heads and the crop back to the input size."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sa2_pipeline.models.base import SegmentationModel


class _Toy(SegmentationModel):
    """Features = the padded input (full) and its 2x average pool (one aux feature)."""

    size_divisor = 8

    def __init__(self, deep_supervision: bool = True) -> None:
        super().__init__(in_channels=2, num_classes=3, base_channels=2,
                         deep_supervision=deep_supervision, extra="kept")
        self.seen: list[tuple[int, int]] = []
        self.build_heads(2, [2])

    def forward_features(self, x):
        self.seen.append(tuple(x.shape[-2:]))
        return [x, nn.functional.avg_pool2d(x, 2)]


def test_pads_to_the_divisor_and_crops_every_output_back():
    model = _Toy()
    x = torch.randn(1, 2, 13, 9)
    main, aux = model.train()(x)
    assert model.seen == [(16, 16)]
    assert main.shape == aux.shape == (1, 3, 13, 9)
    # The main head is a 1x1 conv on the (reflect-padded, then cropped) input itself.
    expected = nn.functional.conv2d(x, model.head.weight, model.head.bias)
    torch.testing.assert_close(main, expected)
    assert isinstance(model.eval()(x), torch.Tensor)


def test_init_kwargs_heads_and_checks():
    model = _Toy(deep_supervision=False)
    assert model.init_kwargs == {"in_channels": 2, "num_classes": 3, "base_channels": 2,
                                 "deep_supervision": False, "extra": "kept"}
    assert model.aux_heads is None
    assert isinstance(model.train()(torch.randn(1, 2, 8, 8)), torch.Tensor)
    assert sorted(model.state_dict()) == ["head.bias", "head.weight"]
    with pytest.raises(ValueError, match="_Toy needs input height and width >= 8"):
        model(torch.randn(1, 2, 7, 8))
    with pytest.raises(ValueError, match="_Toy was built for in_channels=2"):
        model(torch.randn(1, 3, 8, 8))


def test_forward_features_is_required():
    class Bare(SegmentationModel):
        pass

    bare = Bare(in_channels=1, num_classes=1, base_channels=1, deep_supervision=False)
    bare.build_heads(1, [])
    with pytest.raises(NotImplementedError, match="Bare must implement forward_features"):
        bare(torch.randn(1, 1, 16, 16))
