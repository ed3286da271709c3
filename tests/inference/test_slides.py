"""Whole-slide inference library: readers, level choice, tissue, streaming window, outputs."""

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from scipy import ndimage
from torch import nn

from sa2_pipeline.inference.outputs import ObjectCounter, write_mask
from sa2_pipeline.inference.slides import (
    ArraySource,
    SlideSource,
    UnreadableImageError,
    choose_level,
    open_image,
    tile_has_tissue,
    tissue_mask,
)
from sa2_pipeline.inference.sliding_window import predict_sliding_window
from sa2_pipeline.inference.streaming import WindowSpec, stream_probabilities


def _conv_model(seed: int = 0, classes: int = 1) -> nn.Module:
    """A 3x3 convolution net: its output depends on the neighbourhood, so tiles matter."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(4, classes, 3, padding=1)).eval()


def _forward(model: nn.Module):
    def forward(tiles: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(model(tiles))
    return forward


def _he_like(height: int, width: int, seed: int = 0, tissue_fraction: float = 1.0):
    """Pinkish blobs (saturated) on white glass (unsaturated)."""
    rng = np.random.default_rng(seed)
    image = np.full((height, width, 3), 240, dtype=np.uint8)
    yy, xx = np.mgrid[:height, :width]
    radius = np.sqrt(tissue_fraction * height * width / np.pi)
    disc = (yy - height / 2) ** 2 + (xx - width / 2) ** 2 < radius**2
    noise = rng.integers(0, 40, (height, width, 1))
    image[disc] = (np.array([200, 90, 160]) + noise[disc] - 20).clip(0, 255)
    return image, disc


@pytest.mark.parametrize("border", [None, 0])
@pytest.mark.parametrize("shape", [(150, 230), (40, 200), (90, 64), (70, 300)])
def test_streaming_equals_in_memory_sliding_window(shape, border):
    model = _conv_model()
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    tensor = torch.from_numpy(image.transpose(2, 0, 1).copy()).float() / 255
    expected = predict_sliding_window(model, tensor, patch_size=64, overlap=0.5,
                                      batch_size=3, border=border)[0].numpy()

    def read(x, y, w, h):
        assert h <= 80 or h == shape[0]  # never more than a band of rows
        return image[y : y + h, x : x + w]

    spec = WindowSpec(patch=64, overlap=0.5, batch_size=3, num_classes=1, border=border)
    bands = list(stream_probabilities(read, (shape[1], shape[0]), _forward(model), spec))
    got = np.concatenate([b for _, b in bands], axis=1)
    assert [first for first, _ in bands] == list(np.cumsum([0] + [b.shape[1] for _, b in
                                                               bands])[:-1])
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_streaming_skips_background_tiles_and_leaves_them_zero():
    model = _conv_model()
    image = np.random.default_rng(2).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    seen = []

    def forward(tiles):
        seen.append(tiles.shape[0])
        return torch.sigmoid(model(tiles))

    def left_half(x, y, w, h):
        return x < 100

    spec = WindowSpec(patch=64, overlap=0.5, batch_size=4, border=0)
    bands = list(stream_probabilities(lambda x, y, w, h: image[y:y + h, x:x + w], (256, 256),
                                      forward, spec, has_tissue=left_half))
    probs = np.concatenate([b for _, b in bands], axis=1)[0]
    assert sum(seen) == 7 * 4  # 7 rows of tiles, 4 of 7 columns start left of x=100
    assert (probs[:, 200:] == 0).all() and (probs[:, :100] > 0).all()


def test_object_counter_joins_objects_across_bands():
    rng = np.random.default_rng(3)
    mask = ndimage.binary_opening(rng.random((300, 211)) > 0.55, iterations=1)
    labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
    expected = np.sort(np.bincount(labels.ravel())[1:])
    for cuts in ([0, 300], [0, 1, 2, 77, 150, 151, 299, 300], list(range(0, 301, 7)) + [300]):
        counter = ObjectCounter()
        for a, b in zip(cuts[:-1], cuts[1:], strict=True):
            if b > a:
                counter.add(mask[a:b].astype(np.uint8))
        np.testing.assert_array_equal(np.sort(counter.object_areas()), expected)
        assert counter.foreground == int(mask.sum()) and count == len(expected)


def _write_pyramid(path: Path, image: np.ndarray, mpp: float | None = 0.5) -> None:
    """A JPEG-compressed, tiled, pyramidal TIFF (levels as SubIFDs)."""
    levels = [image]
    while max(levels[-1].shape[:2]) > 256:
        levels.append(levels[-1][::2, ::2])
    res = {} if mpp is None else {"resolution": (1e4 / mpp, 1e4 / mpp),
                                  "resolutionunit": "CENTIMETER"}
    with tifffile.TiffWriter(path) as tif:
        tif.write(levels[0], tile=(128, 128), compression="jpeg", photometric="rgb",
                  subifds=len(levels) - 1, **res)
        for level in levels[1:]:
            tif.write(level, tile=(128, 128), compression="jpeg", photometric="rgb",
                      subfiletype=1)


def test_pyramidal_jpeg_tiff_opens_lazily_with_levels_and_pixel_size(tmp_path):
    image, _ = _he_like(700, 1000)
    path = tmp_path / "slide.tif"
    _write_pyramid(path, image, mpp=0.5)
    source = open_image(path)
    try:
        assert isinstance(source, SlideSource)
        assert source.level_dimensions[0] == (1000, 700)
        assert source.level_dimensions[1] == (500, 350)
        assert source.mpp == pytest.approx(0.5)
        region = source.read(1, 100, 50, 64, 32)
        assert region.shape == (32, 64, 3) and region.dtype == np.uint8
        # JPEG is lossy: close to the written pixels, not equal
        assert np.abs(region.astype(int) - image[::2, ::2][50:82, 100:164]).mean() < 12
        assert max(source.thumbnail(128).shape[:2]) == 128
        assert choose_level(source, 1.0) == 1 and choose_level(source, 0.4) == 0
        assert choose_level(source, None) == 0
    finally:
        source.close()


def test_sixteen_bit_tiff_is_scaled_as_ingestion_scales_it(tmp_path):
    from sa2_pipeline.datasets.folder import to_rgb_uint8
    from sa2_pipeline.datasets.raster import read_raster

    rng = np.random.default_rng(4)
    for name, high in (("dim.tif", 4000), ("full.tif", 65535)):
        path = tmp_path / name
        tifffile.imwrite(path, rng.integers(0, high, (64, 80, 3), dtype=np.uint16),
                         photometric="rgb")
        source = open_image(path)
        assert isinstance(source, ArraySource)
        np.testing.assert_array_equal(source.read(0, 0, 0, 80, 64),
                                      to_rgb_uint8(read_raster(path)))


@pytest.mark.parametrize("photometric", ["rgb", "minisblack"])
def test_channels_first_tiff_is_read_as_its_true_size(tmp_path, photometric):
    path = tmp_path / "planar.tif"
    data = np.random.default_rng(5).integers(0, 256, (3, 512, 384), dtype=np.uint8)
    tifffile.imwrite(path, data, photometric=photometric)
    source = open_image(path)
    assert source.level_dimensions[0] == (384, 512)
    np.testing.assert_array_equal(source.read(0, 0, 0, 384, 512), data.transpose(1, 2, 0))


def test_bad_inputs_are_refused_with_the_file_and_the_reason(tmp_path):
    (tmp_path / "empty.tif").write_bytes(b"")
    (tmp_path / "corrupt.tif").write_bytes(b"II*\x00" + b"\xff" * 100)
    (tmp_path / "notes.txt").write_text("hello")
    import cv2

    cv2.imwrite(str(tmp_path / "tiny.png"), np.zeros((8, 8, 3), np.uint8))
    cases = {"missing.png": "no such file", "empty.tif": "empty file",
             "corrupt.tif": "unreadable TIFF", "notes.txt": "unsupported format",
             "tiny.png": "too small"}
    for name, reason in cases.items():
        with pytest.raises(UnreadableImageError, match=reason) as err:
            open_image(tmp_path / name)
        assert name in str(err.value)


def test_tissue_mask_finds_the_stained_region():
    image, disc = _he_like(200, 300, tissue_fraction=0.4)
    mask = tissue_mask(image)
    assert (mask == disc).mean() > 0.97
    assert tile_has_tissue(mask, (300, 200), (140, 90, 20, 20))
    assert not tile_has_tissue(mask, (300, 200), (0, 0, 20, 20))
    assert tissue_mask(np.full((50, 50, 3), 128, np.uint8)).all()  # no contrast: all tissue


@pytest.mark.parametrize("size", [(300, 200), (1500, 1100)])
def test_pyramidal_mask_round_trips(tmp_path, size, monkeypatch):
    from sa2_pipeline.inference import outputs

    monkeypatch.setattr(outputs, "PNG_MAX_PIXELS", 100)  # force the TIFF writer
    width, height = size
    mask = (np.random.default_rng(6).random((height, width)) > 0.5).astype(np.uint8) * 255
    bands = ((y, mask[y : y + 97]) for y in range(0, height, 97))
    path = tmp_path / "m.tif"
    write_mask(path, bands, size, mpp=0.25)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        assert page.shape == (height, width) and page.is_tiled
        np.testing.assert_array_equal(page.asarray(), mask)
        levels = tif.series[0].levels
        if max(size) > 512:
            assert len(levels) >= 2
            np.testing.assert_array_equal(levels[1].asarray(), mask[::2, ::2])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
