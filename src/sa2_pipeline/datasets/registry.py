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


def load_raw_dataset(fmt: str, root: str | Path, dataset_name: str) -> IngestedDataset:
    """Read and verify a dataset in its original download format.

    Raises:
        ValueError: Unknown format (the message lists the known ones).
        DatasetValidationError: Every problem found in the raw files, at once.
    """
    if fmt not in ADAPTERS:
        raise ValueError(f"unknown raw format {fmt!r}; known formats: {sorted(ADAPTERS)}")
    module, func = ADAPTERS[fmt].split(":")
    loader = getattr(importlib.import_module(module), func)
    return loader(Path(root), dataset_name=dataset_name)
