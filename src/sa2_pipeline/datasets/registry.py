"""Raw-format adapters by name: the one list of formats, and ``load_raw_dataset``.

:data:`ADAPTERS` is the only place a format is named: ``data_ingestion.format`` accepts
exactly its keys (:data:`FORMATS`, used by :mod:`sa2_pipeline.config`), and what a
format supports is a field of its :class:`Adapter`. This module imports no adapter (nor
numpy) until one is loaded, so the configuration can read it cheaply.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sa2_pipeline.datasets.schema import IngestedDataset

__all__ = ["ADAPTERS", "FORMATS", "SUPPORTS_MAX_SIDE", "Adapter", "load_raw_dataset",
           "training_pixel_size"]


@dataclass(frozen=True)
class Adapter:
    """One raw format.

    Attributes:
        loader: ``"module:function"``; the function takes ``(root, dataset_name=...)``
            and returns an :class:`~sa2_pipeline.datasets.schema.IngestedDataset`.
        max_side: Whether the loader can cap the image size as it reads (``max_side=``).
        mask_kind: Whether the loader takes a mask rule (``mask_kind=``, the folder
            adapter: ``auto``, ``binary``, ``labels`` or ``instances``).
        pixel_size_um: The format's pixel size (um/px) when all its images share one
            (MoNuSeg: TCGA slides scanned at 40x, 0.25; GlaS: 20x, 0.62); ``None`` when
            it varies or is not a microscope's (dermoscopy, MRI, arbitrary folders).
    """

    loader: str
    max_side: bool = False
    mask_kind: bool = False
    pixel_size_um: float | None = None


ADAPTERS: dict[str, Adapter] = {
    "monuseg": Adapter("sa2_pipeline.datasets.monuseg:load_monuseg", pixel_size_um=0.25),
    "glas": Adapter("sa2_pipeline.datasets.glas:load_glas", max_side=True,
                    pixel_size_um=0.62),
    "isic2018": Adapter("sa2_pipeline.datasets.isic2018:load_isic2018", max_side=True),
    "segpc2021": Adapter("sa2_pipeline.datasets.segpc2021:load_segpc2021"),
    "acdc": Adapter("sa2_pipeline.datasets.acdc:load_acdc"),
    "folder": Adapter("sa2_pipeline.datasets.folder:load_image_folder", mask_kind=True),
}

#: The format names, in table order (the values ``data_ingestion.format`` accepts).
FORMATS: tuple[str, ...] = tuple(ADAPTERS)

#: Formats whose adapter can cap the image size as it reads (``max_side``).
SUPPORTS_MAX_SIDE = frozenset(name for name, adapter in ADAPTERS.items() if adapter.max_side)


def load_raw_dataset(fmt: str, root: str | Path, dataset_name: str,
                     max_side: int | None = None,
                     mask_kind: str = "auto", num_classes: int | None = None) -> IngestedDataset:
    """Read and verify a dataset in its original download format.

    Args:
        max_side: Downscale each image and mask, as it is read, to this longer side at
            most (formats in :data:`SUPPORTS_MAX_SIDE`); ``None``: native resolution.
        mask_kind: The folder adapter's mask rule; other formats take only ``"auto"``.
        num_classes: ``model.num_classes``: every mask label must be one the model learns
            (0/1 for 1, 0..C-1 for C >= 2); ``None`` skips the check.

    Raises:
        ValueError: Unknown format (the message lists the known ones), or ``max_side``
            asked of a format that does not support it.
        DatasetValidationError: Every problem found in the raw files, at once.
    """
    if fmt not in ADAPTERS:
        raise ValueError(f"unknown raw format {fmt!r}; known formats: {sorted(ADAPTERS)}")
    module, func = ADAPTERS[fmt].loader.split(":")
    loader = getattr(importlib.import_module(module), func)
    options: dict[str, object] = {}
    if mask_kind != "auto":
        if not ADAPTERS[fmt].mask_kind:
            raise ValueError(f"data_ingestion.mask_kind is only for the folder format, not "
                             f"{fmt!r}; remove it or set auto")
        options["mask_kind"] = mask_kind
    if max_side is not None:
        if fmt not in SUPPORTS_MAX_SIDE:
            raise ValueError(f"data_ingestion.max_side is not supported for format {fmt!r} "
                             f"(supported: {sorted(SUPPORTS_MAX_SIDE)}); remove it or set null")
        options["max_side"] = max_side
    dataset = loader(Path(root), dataset_name=dataset_name, **options)
    if num_classes is not None:
        from sa2_pipeline.datasets.schema import DatasetValidationError
        from sa2_pipeline.datasets.verify import label_problems

        problems = label_problems(dataset, root, num_classes)
        if problems:
            raise DatasetValidationError(problems, root)
    return dataset


def training_pixel_size(fmt: str, pixel_size_um: float | None, *, max_side: int | None,
                        mode: str) -> float | None:
    """The pixel size (um/px) a model trained on this data sees, or ``None`` if unknown.

    ``pixel_size_um`` (``data_ingestion.pixel_size_um``) when set, else the format's own.
    Unknown when the images were rescaled by their own factor each: downscaled as read
    (``max_side``) or resized to one size for training (``data_processing.mode: resize``).
    """
    if max_side is not None or mode == "resize":
        return None
    return pixel_size_um if pixel_size_um is not None else ADAPTERS[fmt].pixel_size_um
