"""SA2-Net (scale-aware attention network), built from ``docs/network.md``.

``blocks`` holds the SA2-specific blocks (MSFN, conv-MLP, AuA), ``model`` the network,
``release_import`` the importer for the authors' released weights. The layers SA2-Net shares
with the U-Net live in :mod:`sa2_pipeline.models.layers`.
"""

from sa2_pipeline.models.sa2net.model import SA2Module, SA2Net
from sa2_pipeline.models.sa2net.release_import import (
    OFFICIAL_INPUT_CONVENTION,
    OfficialCheckpointError,
    convert_official_state_dict,
    load_official_checkpoint,
    official_model_kwargs,
)

__all__ = [
    "OFFICIAL_INPUT_CONVENTION",
    "OfficialCheckpointError",
    "SA2Module",
    "SA2Net",
    "convert_official_state_dict",
    "load_official_checkpoint",
    "official_model_kwargs",
]
