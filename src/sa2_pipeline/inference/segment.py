"""Segment one image or whole slide with a loaded model, writing its outputs atomically.

:func:`segment_file` is the one per-input step that the Kedro ``inference`` pipeline and the
``sa2-pipeline segment`` command share: open the input lazily
(:mod:`~sa2_pipeline.inference.slides`), pick the pyramid level nearest the model's
training pixel size, skip background tiles, stream the sliding window
(:mod:`~sa2_pipeline.inference.streaming`), cut the objects out band by band with
evaluation's rule (:mod:`~sa2_pipeline.inference.instances_stream`) and write, in the same
single pass, the files ``inference.outputs`` asks for (mask, OME-TIFF, instance labels,
QuPath GeoJSON: :mod:`~sa2_pipeline.inference.outputs`,
:mod:`~sa2_pipeline.inference.vectors`), the overlay and the statistics.
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
from sa2_pipeline.inference.instances_stream import InstanceStream, SlideObject
from sa2_pipeline.inference.outputs import (
    BandSink,
    ObjectOutlines,
    ThumbnailMask,
    atomic_path,
    mask_file_name,
    overlay_png,
    write_mask,
    write_ome_tiff,
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
from sa2_pipeline.inference.vectors import GeoJSONWriter, level0_polygons, measurements_batch
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


def level_bands(source: ImageSource, predictor: Any, settings: InferenceConfig, level: int,
                tissue: np.ndarray | None,
                on_row: Callable[[int, int], None] | None = None
                ) -> Iterator[tuple[int, np.ndarray]]:
    """Probability rows ``(first_row, float32 (C, h, W))`` of ``level``, top to bottom."""
    patch = model_patch(predictor, settings)
    size = source.level_dimensions[level]
    spec = WindowSpec(patch=patch, overlap=settings.overlap, batch_size=settings.batch_size,
                      num_classes=predictor.num_classes)
    has_tissue = None
    if tissue is not None:
        def has_tissue(x: int, y: int, w: int, h: int) -> bool:
            return tile_has_tissue(tissue, size, (x, y, w, h))

    def read(x: int, y: int, w: int, h: int) -> np.ndarray:
        return source.read(level, x, y, w, h)

    yield from stream_probabilities(read, size, tile_forward(predictor, settings, patch),
                                    spec, has_tissue=has_tissue, on_row=on_row)


def to_level0(first: int, rows: np.ndarray, size: tuple[int, int],
              size0: tuple[int, int]) -> tuple[int, np.ndarray]:
    """Rows ``[first, first + h)`` of a level brought to level 0 by nearest neighbour.

    Level rows ``[first, end)`` cover level-0 rows ``[ceil(first*H0/H), ceil(end*H0/H))``,
    so consecutive bands give consecutive level-0 bands.
    """
    if size == size0:
        return first, rows
    (width, height), (width0, height0) = size, size0
    start = -(-first * height0 // height)
    stop = min(-(-(first + rows.shape[0]) * height0 // height), height0)
    index = np.minimum((np.arange(start, stop) * height) // height0, height - 1) - first
    cols = np.minimum((np.arange(width0) * width) // width0, width - 1)
    return start, rows[index][:, cols]


def mask_bands(source: ImageSource, predictor: Any, settings: InferenceConfig, level: int,
               tissue: np.ndarray | None,
               on_row: Callable[[int, int], None] | None = None
               ) -> Iterator[tuple[int, np.ndarray]]:
    """Label-mask rows ``(first_row, uint8 (h, W0))`` at level 0, top to bottom.

    Binary masks are 0/255, multi-class masks class indices. A level other than 0 is
    segmented at its own size and brought to level 0 by nearest neighbour.
    """
    scale = 255 if predictor.num_classes == 1 else 1
    size, size0 = source.level_dimensions[level], source.level_dimensions[0]
    for first, probs in level_bands(source, predictor, settings, level, tissue, on_row):
        mask = probabilities_to_mask(probs, settings.threshold) * np.uint8(scale)
        yield to_level0(first, mask, size, size0)


def segment_file(path: Path, predictor: Any, settings: InferenceConfig, out_dir: Path,
                 stem: str, on_row: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Segment one input; write its outputs atomically (``inference.outputs``: see
    :mod:`sa2_pipeline.inference.run`), ``<stem>.overlay.png``, ``<stem>.csv`` (summary)
    and ``<stem>.objects.csv`` (one row per object).

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


def output_names(stem: str, size0: tuple[int, int], outputs: tuple[str, ...]) -> dict[str, str]:
    """The file of every output of input ``stem`` (level-0 size ``size0``)."""
    names = {"overlay": f"{stem}.overlay.png", "summary": f"{stem}.csv",
             "objects": f"{stem}.objects.csv"}
    files = {"mask": f"{stem}.mask{Path(mask_file_name(stem, size0)).suffix}",
             "ome": f"{stem}.mask.ome.tif", "labels": f"{stem}.labels.ome.tif",
             "geojson": f"{stem}.geojson"}
    return {**{k: v for k, v in files.items() if k in outputs}, **names}


class _ObjectSink:
    """Where each finished object goes: the GeoJSON, the objects CSV, the thumbnail's
    outlines and the area list of the summary."""

    def __init__(self, source: ImageSource, level: int, stem: str, geojson, objects_csv,
                 outlines: ObjectOutlines, class_names: list[str]) -> None:
        size0, size = source.level_dimensions[0], source.level_dimensions[level]
        self.size0 = size0
        self.scale = (size0[0] / size[0], size0[1] / size[1])
        self.mpp = source.mpp
        self.geojson = None if geojson is None else GeoJSONWriter(geojson, stem, class_names)
        self.csv = objects_csv
        self.csv.write("object,area_px,area_um2\n")
        self.outlines = outlines
        self.areas: list[float] = []

    def add(self, objects: list[SlideObject]) -> None:
        """Outline, measure and write ``objects`` (one band's), all at once: shapely's
        vectorised functions over the list (:func:`level0_polygons`), the same output as
        one object at a time."""
        if not objects:
            return
        outlines = level0_polygons(objects, self.scale, self.size0)
        pixels = [obj.area for obj in objects]
        rows = []
        for obj, count in zip(objects, pixels, strict=True):
            area = count * self.scale[0] * self.scale[1]
            self.areas.append(area)
            um2 = "" if self.mpp is None else f"{area * self.mpp**2:.4f}"
            px = int(area) if float(area).is_integer() else round(area, 2)
            rows.append(f"{obj.id},{px},{um2}\n")
        self.csv.write("".join(rows))
        self._draw(outlines)
        if self.geojson is not None:
            self.geojson.write_many(objects, outlines, measurements_batch(
                objects, outlines, self.scale, self.mpp, pixel_counts=pixels))

    def _draw(self, outlines: list) -> None:
        """``self.outlines.add`` of every outline: the polygons' parts as one MultiPolygon
        (the same rings drawn, in one call), anything else one by one."""
        import shapely

        array = np.empty(len(outlines), dtype=object)
        array[:] = outlines
        kind = shapely.get_type_id(array)
        polygonal = (kind == 3) | (kind == 6)  # Polygon, MultiPolygon
        parts = shapely.get_parts(array[polygonal])
        if len(parts):
            self.outlines.add(shapely.multipolygons(parts))
        for outline in array[~polygonal]:
            self.outlines.add(outline)

    def close(self) -> None:
        if self.geojson is not None:
            self.geojson.close()


def _band_sinks(names: dict[str, str], out_dir: Path, size0: tuple[int, int],
                mpp: float | None) -> dict[str, BandSink]:
    """A writer thread per raster output asked for (mask, OME-TIFF mask, labels)."""
    sinks: dict[str, BandSink] = {}
    if "mask" in names:
        sinks["mask"] = BandSink(lambda bands: write_mask(
            out_dir / names["mask"], bands, size0, mpp=mpp))
    if "ome" in names:
        sinks["ome"] = BandSink(lambda bands: write_ome_tiff(
            out_dir / names["ome"], bands, size0, mpp=mpp, channel="mask"))
    if "labels" in names:
        sinks["labels"] = BandSink(lambda bands: write_ome_tiff(
            out_dir / names["labels"], bands, size0, mpp=mpp, channel="instances",
            dtype=np.uint32))
    return sinks


def _segment_source(source, predictor, settings, out_dir, stem, on_row) -> dict[str, Any]:
    import contextlib

    level = choose_level(source, settings.model_mpp)
    size0 = source.level_dimensions[0]
    thumb = source.thumbnail(settings.thumbnail_side)
    tissue_map = tissue_mask(thumb)
    preview = ThumbnailMask(size0, (thumb.shape[1], thumb.shape[0]))
    outlines = ObjectOutlines(size0, (thumb.shape[1], thumb.shape[0]))
    names = output_names(stem, size0, settings.outputs)
    sinks = _band_sinks(names, out_dir, size0, source.mpp)
    try:
        with contextlib.ExitStack() as files:
            geojson = None
            if "geojson" in names:
                geojson = files.enter_context(
                    open(files.enter_context(atomic_path(out_dir / names["geojson"])), "w",
                         encoding="utf-8"))
            objects_csv = files.enter_context(open(files.enter_context(
                atomic_path(out_dir / names["objects"])), "w", encoding="utf-8"))
            objects = _ObjectSink(source, level, stem, geojson, objects_csv, outlines,
                                  _class_names(predictor))
            foreground = _stream_slide(
                source, predictor, settings, level,
                tissue_map if settings.skip_background else None, on_row, objects, sinks,
                preview)
            objects.close()
            for sink in sinks.values():
                sink.close()
    except BaseException:
        for sink in sinks.values():
            sink.abort()
        raise
    atomic_write_bytes(out_dir / names["overlay"], overlay_png(thumb, preview.mask,
                                                              outlines.canvas))
    record = _statistics(source, level, settings, foreground, objects.areas,
                         float(tissue_map.mean()))
    atomic_write_text(out_dir / names["summary"], _summary_csv(record))
    record["outputs"] = names
    return record


def _stream_slide(source, predictor, settings, level, tissue, on_row, objects: _ObjectSink,
                  sinks: dict[str, BandSink], preview: ThumbnailMask) -> int:
    """The one pass over the slide: every band of probabilities feeds the objects, the
    raster writers and the preview. Returns the foreground pixel count (level 0).

    The network runs here; what each band feeds runs in a worker thread
    (a :class:`~sa2_pipeline.inference.outputs.BandSink`: a queue of at most 4 bands),
    so the network does not wait for the objects, their outlines or the files. An error
    on either side stops both; the worker's is raised here.
    """
    size0, size = source.level_dimensions[0], source.level_dimensions[level]
    binary = predictor.num_classes == 1
    stream = InstanceStream(size[0], size[1], settings.instances)
    foreground = [0]

    def take(found) -> None:
        new, label_rows = found
        objects.add(new)
        if "labels" in sinks:
            for first, rows in label_rows:
                sinks["labels"].put(*to_level0(first, rows, size, size0))

    def consume(bands) -> None:
        for first, probs in bands:
            mask = probabilities_to_mask(probs, settings.threshold)
            fg_prob = probs[0] if binary else 1.0 - probs[0]
            take(stream.add(first, mask > 0, fg_prob, None if binary else mask))
            start, mask0 = to_level0(first, mask * np.uint8(255 if binary else 1), size,
                                     size0)
            foreground[0] += int(np.count_nonzero(mask0))
            preview.add(start, mask0)
            for kind in ("mask", "ome"):
                if kind in sinks:
                    sinks[kind].put(start, mask0)
        take(stream.finish())

    worker = BandSink(consume)
    try:
        for first, probs in level_bands(source, predictor, settings, level, tissue, on_row):
            worker.put(first, probs)
        worker.close()
    except BaseException:
        worker.abort()
        raise
    return foreground[0]


def _class_names(predictor: Any) -> list[str]:
    """Class names of the model (bundle metadata ``class_names`` without background), else
    ``Nucleus`` for a binary model and ``Class k`` otherwise."""
    bundle = predictor.bundles[0] if getattr(predictor, "bundles", None) else {}
    names = (bundle.get("metadata") or {}).get("class_names")
    if names:
        return list(names)[1:] if len(names) == predictor.num_classes else list(names)
    if predictor.num_classes == 1:
        return ["Nucleus"]
    return [f"Class {k}" for k in range(1, predictor.num_classes)]


def _statistics(source: ImageSource, level: int, settings: InferenceConfig, foreground: int,
                areas_px: list[float], tissue_fraction: float) -> dict[str, Any]:
    """The summary: sizes, level, pixel sizes, foreground, and the objects' numbers (count,
    density per mm^2 of tissue, area mean, median and quartiles)."""
    width, height = source.level_dimensions[0]
    areas = np.asarray(areas_px, dtype=np.float64)
    um2 = None if source.mpp is None else source.mpp**2
    level_w = source.level_dimensions[level][0]
    tissue_mm2 = None if um2 is None else tissue_fraction * width * height * um2 / 1e6
    q1, median, q3 = (np.percentile(areas, [25, 50, 75]) if len(areas) else (0.0, 0.0, 0.0))
    record = {
        "width": width,
        "height": height,
        "level": level,
        "level_mpp": None if source.mpp is None else source.mpp * width / level_w,
        "mpp": source.mpp,
        "model_mpp": settings.model_mpp,
        "foreground_fraction": foreground / max(width * height, 1),
        "object_count": len(areas),
        "instance_method": settings.instances.method,
        "tissue_fraction": tissue_fraction,
        "tissue_area_mm2": tissue_mm2,
        "object_density_per_mm2": (len(areas) / tissue_mm2 if tissue_mm2 else None),
    }
    for name, value in (("mean", float(areas.mean()) if len(areas) else 0.0),
                        ("median", float(median)), ("q1", float(q1)), ("q3", float(q3))):
        record[f"object_area_px_{name}"] = value
        record[f"object_area_um2_{name}"] = _times(value, um2)
    return record


def _times(value: float, factor: float | None) -> float | None:
    return None if factor is None else value * factor


def _summary_csv(record: dict[str, Any]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(record), lineterminator="\n")
    writer.writeheader()
    writer.writerow({k: "" if v is None or (isinstance(v, float) and math.isnan(v)) else v
                     for k, v in record.items()})
    return buffer.getvalue()
