"""Raw-format adapters by name: ``load_raw_dataset(format, root)``."""

from __future__ import annotations

import importlib
from pathlib import Path

from sa2_pipeline.datasets.base import IngestedDataset

# format name -> "module:function(root, dataset_name=...) -> IngestedDataset"
ADAPTERS: dict[str, str] = {
    "monuseg": "sa2_pipeline.datasets.monuseg:load_monuseg",
    "glas": "sa2_pipeline.datasets.glas:load_glas",
    "isic2018": "sa2_pipeline.datasets.isic2018:load_isic2018",
    "segpc2021": "sa2_pipeline.datasets.segpc2021:load_segpc2021",
    "acdc": "sa2_pipeline.datasets.acdc:load_acdc",
    "folder": "sa2_pipeline.datasets.folder:load_image_folder",
}


#: Formats whose adapter can cap the image size as it reads (``max_side``).
SUPPORTS_MAX_SIDE = frozenset({"isic2018", "glas"})


def load_raw_dataset(fmt: str, root: str | Path, dataset_name: str,
                     max_side: int | None = None) -> IngestedDataset:
    """Read and verify a dataset in its original download format.

    Args:
        max_side: Downscale each image and mask, as it is read, to this longer side at
            most (formats in :data:`SUPPORTS_MAX_SIDE`); ``None``: native resolution.

    Raises:
        ValueError: Unknown format (the message lists the known ones), or ``max_side``
            asked of a format that does not support it.
        DatasetValidationError: Every problem found in the raw files, at once.
    """
    if fmt not in ADAPTERS:
        raise ValueError(f"unknown raw format {fmt!r}; known formats: {sorted(ADAPTERS)}")
    module, func = ADAPTERS[fmt].split(":")
    loader = getattr(importlib.import_module(module), func)
    if max_side is None:
        return loader(Path(root), dataset_name=dataset_name)
    if fmt not in SUPPORTS_MAX_SIDE:
        raise ValueError(f"data_ingestion.max_side is not supported for format {fmt!r} "
                         f"(supported: {sorted(SUPPORTS_MAX_SIDE)}); remove it or set null")
    return loader(Path(root), dataset_name=dataset_name, max_side=max_side)
