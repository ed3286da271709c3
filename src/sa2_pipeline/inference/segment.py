"""Segment one image or whole slide with a loaded model, writing its outputs atomically.

:func:`segment_file` is the one per-input step that the Kedro ``inference`` pipeline and the
``sa2-pipeline segment`` command share: open the input lazily
(:mod:`~sa2_pipeline.inference.slides`), pick the pyramid level nearest the model's
training pixel size, skip background tiles, stream the sliding window
(:mod:`~sa2_pipeline.inference.streaming`) and write the mask, overlay and statistics
(:mod:`~sa2_pipeline.inference.outputs`).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from sa2_pipeline.config import InferenceConfig
from sa2_pipeline.inference.outputs import (
    ObjectCounter,
    ThumbnailMask,
    mask_file_name,
    overlay_png,
    write_mask,
)
from sa2_pipeline.inference.predict import probabilities_to_mask
from sa2_pipeline.inference.slides import (
    ImageSource,
    choose_level,
    open_image,
    tile_has_tissue,
    tissue_mask,
)
from sa2_pipeline.inference.streaming import WindowSpec, stream_probabilities
from sa2_pipeline.io_utils import atomic_write_bytes, atomic_write_text
from sa2_pipeline.runtime.precision import autocast, resolve_precision
from sa2_pipeline.runtime.precision_probe import concrete_precision


def tile_forward(predictor: Any, settings: InferenceConfig, patch: int) -> Callable:
    """``forward(tiles) -> probabilities`` of a :class:`~sa2_pipeline.inference.predict.Predictor`:
    every member's tile probabilities (its own channel order, TTA, precision), averaged."""
    import torch

    from sa2_pipeline.inference.sliding_window import _forward_probabilities, _tta_transforms

    for bundle in predictor.bundles:
        if bundle.get("resize_to"):
            raise ValueError(
                f"this model was trained on images resized to {bundle['resize_to']} px: it "
                "segments whole images (sliding window not applicable), not slides")
    device = predictor.device
    transforms = _tta_transforms(settings.tta, (patch, patch))
    first = predictor.models[0]
    precision = concrete_precision(settings.precision, device, first, (
        settings.batch_size, getattr(first, "in_channels", 3), patch, patch))
    context = autocast(device, resolve_precision(precision, device))
    orders = [b.get("input_convention", {}).get("channel_order", "rgb")
              for b in predictor.bundles]

    def forward(tiles: torch.Tensor) -> torch.Tensor:
        tiles = tiles.to(device)
        total = None
        for model, order in zip(predictor.models, orders, strict=True):
            x = tiles.flip(1) if order == "bgr" else tiles
            probs = _forward_probabilities(model, x, transforms, predictor.num_classes, context)
            total = probs if total is None else total + probs
        return (total / len(predictor.models)).cpu()

    for model in predictor.models:
        model.eval()
    return forward


def model_patch(predictor: Any, settings: InferenceConfig) -> int:
    """The tile side: the setting, else the first member's training patch."""
    return int(settings.patch_size or predictor.bundles[0].get("patch_size", 256))


def mask_bands(source: ImageSource, predictor: Any, settings: InferenceConfig, level: int,
               tissue: np.ndarray | None,
               on_row: Callable[[int, int], None] | None = None
               ) -> Iterator[tuple[int, np.ndarray]]:
    """Label-mask rows ``(first_row, uint8 (h, W0))`` at level 0, top to bottom.

    Binary masks are 0/255, multi-class masks class indices. A level other than 0 is
    segmented at its own size and brought to level 0 by nearest neighbour.
    """

    patch = model_patch(predictor, settings)
    size = source.level_dimensions[level]
    width0, height0 = source.level_dimensions[0]
    spec = WindowSpec(patch=patch, overlap=settings.overlap, batch_size=settings.batch_size,
                      num_classes=predictor.num_classes)
    has_tissue = None
    if tissue is not None:
        def has_tissue(x: int, y: int, w: int, h: int) -> bool:
            return tile_has_tissue(tissue, size, (x, y, w, h))

    def read(x: int, y: int, w: int, h: int) -> np.ndarray:
        return source.read(level, x, y, w, h)

    scale = 255 if predictor.num_classes == 1 else 1
    cols = np.minimum((np.arange(width0) * size[0]) // width0, size[0] - 1)
    for first, probs in stream_probabilities(read, size, tile_forward(predictor, settings, patch),
                                             spec, has_tissue=has_tissue, on_row=on_row):
        mask = probabilities_to_mask(probs, settings.threshold) * np.uint8(scale)
        if level == 0:
            yield first, mask
            continue
        # level rows [first, first + h) cover level-0 rows [ceil(first*H0/H), ceil(end*H0/H))
        start = -(-first * height0 // size[1])
        stop = min(-(-(first + mask.shape[0]) * height0 // size[1]), height0)
        rows = np.minimum((np.arange(start, stop) * size[1]) // height0, size[1] - 1) - first
        yield start, mask[rows][:, cols]


def segment_file(path: Path, predictor: Any, settings: InferenceConfig, out_dir: Path,
                 stem: str, on_row: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Segment one input; write ``<stem>.mask.{png,tif}``, ``<stem>.overlay.png``,
    ``<stem>.csv`` (summary) and ``<stem>.objects.csv`` (one row per object) atomically.

    Returns:
        The slide's record: sizes, level, pixel sizes, statistics and output file names.

    Raises:
        sa2_pipeline.inference.slides.UnreadableImageError: The input cannot be segmented.
    """
    source = open_image(path)
    try:
        return _segment_source(source, predictor, settings, out_dir, stem, on_row)
    finally:
        source.close()


def _segment_source(source, predictor, settings, out_dir, stem, on_row) -> dict[str, Any]:
    level = choose_level(source, settings.model_mpp)
    size0 = source.level_dimensions[0]
    thumb = source.thumbnail(settings.thumbnail_side)
    tissue = tissue_mask(thumb) if settings.skip_background else None
    counter = ObjectCounter()
    preview = ThumbnailMask(size0, (thumb.shape[1], thumb.shape[0]))

    def observed() -> Iterator[tuple[int, np.ndarray]]:
        for first, band in mask_bands(source, predictor, settings, level, tissue, on_row):
            counter.add(band)
            preview.add(first, band)
            yield first, band

    mask_name = f"{stem}.mask{Path(mask_file_name(stem, size0)).suffix}"
    write_mask(out_dir / mask_name, observed(), size0, mpp=source.mpp)
    atomic_write_bytes(out_dir / f"{stem}.overlay.png", overlay_png(thumb, preview.mask))
    record = _statistics(source, level, counter, settings)
    atomic_write_text(out_dir / f"{stem}.objects.csv", _objects_csv(counter, source.mpp))
    atomic_write_text(out_dir / f"{stem}.csv", _summary_csv(record))
    record["outputs"] = {"mask": mask_name, "overlay": f"{stem}.overlay.png",
                         "summary": f"{stem}.csv", "objects": f"{stem}.objects.csv"}
    return record


def _statistics(source: ImageSource, level: int, counter: ObjectCounter,
                settings: InferenceConfig) -> dict[str, Any]:
    width, height = source.level_dimensions[0]
    areas = counter.object_areas()
    um2 = None if source.mpp is None else source.mpp**2
    level_w = source.level_dimensions[level][0]
    return {
        "width": width,
        "height": height,
        "level": level,
        "level_mpp": None if source.mpp is None else source.mpp * width / level_w,
        "mpp": source.mpp,
        "model_mpp": settings.model_mpp,
        "foreground_fraction": counter.foreground / max(counter.pixels, 1),
        "object_count": len(areas),
        "object_area_px_mean": float(areas.mean()) if len(areas) else 0.0,
        "object_area_px_median": float(np.median(areas)) if len(areas) else 0.0,
        "object_area_um2_mean": _times(float(areas.mean()) if len(areas) else 0.0, um2),
        "object_area_um2_median": _times(float(np.median(areas)) if len(areas) else 0.0, um2),
    }


def _times(value: float, factor: float | None) -> float | None:
    return None if factor is None else value * factor


def _summary_csv(record: dict[str, Any]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(record), lineterminator="\n")
    writer.writeheader()
    writer.writerow({k: "" if v is None or (isinstance(v, float) and math.isnan(v)) else v
                     for k, v in record.items()})
    return buffer.getvalue()


def _objects_csv(counter: ObjectCounter, mpp: float | None) -> str:
    buffer = io.StringIO()
    buffer.write("object,area_px,area_um2\n")
    for index, area in enumerate(counter.object_areas(), start=1):
        um2 = "" if mpp is None else f"{area * mpp**2:.4f}"
        buffer.write(f"{index},{int(area)},{um2}\n")
    return buffer.getvalue()
