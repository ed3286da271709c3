"""MoNuSeg 2018 adapter: the published layout, TIFF tiles + Aperio ImageScope XML.

One module per concern:

- :mod:`.layout`: where the files are and which tile goes with which XML;
- :mod:`.aperio`: reading (two parsers, same result) and writing Aperio ImageScope XML;
- :mod:`.rasterise`: polygon bounds checks and the polygon -> mask rule;
- :mod:`.convert`: one tile + XML -> RGB image + binary mask, and :func:`load_monuseg`
  over the shared verifier (:mod:`sa2_pipeline.datasets.verify`).

The names below are the adapter's public interface.
"""

from sa2_pipeline.datasets.monuseg.aperio import format_aperio_xml, read_aperio_polygons
from sa2_pipeline.datasets.monuseg.convert import default_workers, load_monuseg
from sa2_pipeline.datasets.monuseg.layout import (
    TEST_DIR,
    TRAIN_ANNOTATION_DIR,
    TRAIN_IMAGE_DIR,
    scan_monuseg,
)
from sa2_pipeline.datasets.monuseg.rasterise import (
    BOUNDS_TOLERANCE_PX,
    polygons_to_instances,
    polygons_to_mask,
)

__all__ = [
    "BOUNDS_TOLERANCE_PX",
    "TEST_DIR",
    "TRAIN_ANNOTATION_DIR",
    "TRAIN_IMAGE_DIR",
    "default_workers",
    "format_aperio_xml",
    "load_monuseg",
    "polygons_to_instances",
    "polygons_to_mask",
    "read_aperio_polygons",
    "scan_monuseg",
]
