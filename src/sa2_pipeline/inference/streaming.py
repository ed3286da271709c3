"""Gaussian-weighted sliding window over a slide in streaming order, in bounded memory.

The tiles and their weights are those of the in-memory window
(:func:`sa2_pipeline.inference.sliding_window.predict_sliding_window`): the same mirrored
border (patch / 8 on every side), the same start offsets
(:func:`~sa2_pipeline.inference.sliding_window.sliding_window_starts`), the same Gaussian
(sigma = patch / 8), the same centred reflect padding of a side shorter than the tile.

Tiles are visited one row of tiles at a time. After row ``i`` no later tile touches
the image rows above the next row's start, so those rows are final: they are divided by
their weights, thresholded and handed on, and the accumulator moves down. The accumulator
holds ``num_classes x patch x width`` floats, so memory grows with the width times the
tile size, never with the slide's height.

Tiles whose box holds no tissue (the thumbnail's mask,
:func:`~sa2_pipeline.inference.slides.tissue_mask`) are not run; pixels that only such
tiles cover get probability 0 (background). With no tile skipped the probabilities equal
the in-memory window's (tested).

Reading and decoding overlap the network: the next row of tiles is read in a worker
thread while the network runs on this one (:func:`_prefetched`, one row ahead).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from sa2_pipeline.config import EvaluationConfig, InferenceConfig, PredictionConfig

Forward = Callable[["object"], "object"]  # torch (B, 3, p, p) -> (B, C, p, p) probabilities


@dataclass(frozen=True)
class WindowSpec:
    """Sliding-window settings."""

    patch: int = EvaluationConfig.patch_size
    overlap: float = PredictionConfig.overlap
    batch_size: int = InferenceConfig.batch_size
    num_classes: int = 1
    #: Mirrored context around the image (px); ``None`` = patch / 8, as the in-memory window.
    border: int | None = None


def reflect_indices(length: int, before: int, after: int) -> np.ndarray:
    """numpy-'reflect' indices (edge not repeated) padding ``length`` by any amount."""
    indices = np.arange(-before, length + after)
    if length == 1:
        return np.zeros_like(indices)
    period = 2 * (length - 1)
    indices = np.remainder(indices, period)
    return np.where(indices >= length, period - indices, indices)


class _PaddedReader:
    """Regions of one level in the window's coordinates: the level mirrored by ``margin``
    on every side, then reflect-padded (centred) to at least the tile, exactly as the
    in-memory window builds its padded image."""

    def __init__(self, read: Callable[[int, int, int, int], np.ndarray],
                 width: int, height: int, tile: int, margin: int) -> None:
        self.read_level = read
        self.width, self.height = width, height
        self.rows, self.top = self._axis(height, tile, margin)
        self.cols, self.left = self._axis(width, tile, margin)
        self.padded_h, self.padded_w = len(self.rows), len(self.cols)

    @staticmethod
    def _axis(length: int, tile: int, margin: int) -> tuple[np.ndarray, int]:
        """Source index of every window position along one axis, and the image's offset."""
        mirrored = reflect_indices(length, margin, margin)
        pad = max(tile - len(mirrored), 0)
        padded = reflect_indices(len(mirrored), pad // 2, pad - pad // 2)
        return mirrored[padded], pad // 2 + margin

    def read(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        """``uint8 (h, w, 3)`` of the window's image at ``(x, y)``."""
        rows, cols = self.rows[y : y + h], self.cols[x : x + w]
        r0, c0 = int(rows.min()), int(cols.min())
        region = self.read_level(c0, r0, int(cols.max()) - c0 + 1, int(rows.max()) - r0 + 1)
        rows, cols = rows - r0, cols - c0
        if not (np.array_equal(rows, np.arange(len(rows)))
                and np.array_equal(cols, np.arange(len(cols)))):
            region = region[rows][:, cols]
        return region


def _to_tensor(tiles: list[np.ndarray]):
    import torch

    batch = np.stack(tiles)  # (B, p, p, 3) uint8
    return torch.from_numpy(batch).permute(0, 3, 1, 2).float().div_(255.0)


def stream_probabilities(
    read: Callable[[int, int, int, int], np.ndarray],
    size: tuple[int, int],
    forward: Forward,
    spec: WindowSpec,
    *,
    has_tissue: Callable[[int, int, int, int], bool] | None = None,
    on_row: Callable[[int, int], None] | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(first_row, probabilities (C, rows, width) float32)`` top to bottom.

    Args:
        read: ``read(x, y, w, h) -> uint8 (h, w, 3)`` RGB of the level being segmented.
        size: ``(width, height)`` of that level.
        forward: Tile probabilities, see :data:`Forward`.
        spec: Patch, overlap, batch size, number of classes.
        has_tissue: ``has_tissue(x, y, w, h)`` in level coordinates; a tile for which it is
            False is skipped. ``None``: run every tile.
        on_row: ``on_row(done, total)`` after each row of tiles (progress bars).
    """
    import torch

    from sa2_pipeline.inference.sliding_window import (
        _tile_for,
        gaussian_importance_map,
        sliding_window_starts,
    )

    width, height = size
    margin = spec.patch // 8 if spec.border is None else int(spec.border)
    patch = _tile_for((height + 2 * margin, width + 2 * margin), (spec.patch, spec.patch),
                      margin)[0]
    reader = _PaddedReader(read, width, height, patch, margin)
    ys = sliding_window_starts(reader.padded_h, patch, spec.overlap)
    xs = sliding_window_starts(reader.padded_w, patch, spec.overlap)
    gauss = gaussian_importance_map((patch, patch))
    acc = torch.zeros((spec.num_classes, patch, reader.padded_w), dtype=torch.float32)
    wsum = torch.zeros((patch, reader.padded_w), dtype=torch.float32)
    emitted = 0  # padded rows handed on so far
    for i, (top, band) in enumerate(_prefetched(reader, ys, xs, patch, has_tissue)):
        _run_tile_row(band, forward, spec, patch, gauss, acc, wsum)
        end = ys[i + 1] if i + 1 < len(ys) else reader.padded_h
        final = end - top
        probs = torch.where(wsum[:final] > 0, acc[:, :final] / wsum[:final].clamp_min(1e-30),
                            torch.zeros(()))
        rows = _crop(probs, top, end, reader)
        if rows is not None:
            yield emitted, rows
            emitted += rows.shape[1]
        acc[:, : patch - final] = acc[:, final:].clone()
        acc[:, patch - final :] = 0
        wsum[: patch - final] = wsum[final:].clone()
        wsum[patch - final :] = 0
        if on_row is not None:
            on_row(i + 1, len(ys))


def _crop(probs, top: int, end: int, reader: _PaddedReader) -> np.ndarray | None:
    """The image (unpadded) part of padded rows ``[top, end)``, or None when all padding."""
    first = max(top, reader.top)
    last = min(end, reader.top + reader.height)
    if last <= first:
        return None
    block = probs[:, first - top : last - top, reader.left : reader.left + reader.width]
    return np.ascontiguousarray(block.numpy())


def _prefetched(reader: _PaddedReader, ys: list[int], xs: list[int], patch: int,
                has_tissue) -> Iterator[tuple[int, dict]]:
    """``(top, {left: tile})`` of every row of tiles, the next row read and decoded in a
    worker thread while the caller runs the network on this one (one row ahead: the
    memory of one more band of pixels, ``patch x width x 3`` bytes)."""
    from concurrent.futures import ThreadPoolExecutor

    def read_row(top: int) -> dict:
        lefts = [x for x in xs if has_tissue is None or has_tissue(
            x - reader.left, top - reader.top, patch, patch)]
        return _read_runs(reader, top, lefts, patch) if lefts else {}

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sa2-read") as pool:
        pending = pool.submit(read_row, ys[0]) if ys else None
        for i, top in enumerate(ys):
            band = pending.result()
            pending = pool.submit(read_row, ys[i + 1]) if i + 1 < len(ys) else None
            yield top, band  # closed early: leaving the pool waits for that one read


def _run_tile_row(band: dict, forward, spec, patch, gauss, acc, wsum) -> None:
    """Add one row of tiles ``{left: tile}`` (Gaussian-weighted) to the accumulator."""
    import torch

    lefts = sorted(band)
    if not lefts:
        return
    with torch.inference_mode():
        for first in range(0, len(lefts), spec.batch_size):
            chunk = lefts[first : first + spec.batch_size]
            tiles = _to_tensor([band[x] for x in chunk])
            probs = forward(tiles)
            for left, tile_probs in zip(chunk, probs, strict=True):
                acc[:, :, left : left + patch].addcmul_(tile_probs, gauss)
                wsum[:, left : left + patch] += gauss


def _read_runs(reader: _PaddedReader, top: int, lefts: list[int], patch: int) -> dict:
    """Tiles ``{left: uint8 (patch, patch, 3)}``, reading each run of touching tiles once."""
    tiles: dict[int, np.ndarray] = {}
    run: list[int] = []
    for left in [*lefts, None]:
        if run and (left is None or left > run[-1] + patch):
            x0 = run[0]
            region = reader.read(x0, top, run[-1] + patch - x0, patch)
            for x in run:
                tiles[x] = region[:, x - x0 : x - x0 + patch]
            run = []
        if left is not None:
            run.append(left)
    return tiles
