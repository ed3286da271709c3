"""Import the authors' released SA2-Net checkpoints.

Release files are ``torch.save({'epoch', 'best_model', 'model', 'state_dict', 'val_loss',
'optimizer'})``; their ``state_dict`` uses the release's module names (``inc``,
``down{k}``, ``bottleneck.gcn{i}``, ``up{k}.AG``, ``outc{k}`` ...), possibly with a
DataParallel ``module.`` prefix, and holds modules the release builds but never calls.
:func:`convert_official_state_dict` renames the used tensors to this project's names
(``_MODULE_MAP`` below, the one place the correspondence is written down), drops the unused
ones and checks every shape, so the result loads with ``strict=True``.

Conventions differ in two ways that the weights do not show:
- the release applies a sigmoid inside the model (n = 1); ours returns logits, so
  ``sigmoid(ours(x)) == release(x)``;
- the release was trained on BGR images scaled to [0, 1] with no mean/std normalisation
  (OpenCV ``imread``): :data:`OFFICIAL_INPUT_CONVENTION`, attached to models loaded by
  :func:`load_official_checkpoint` as ``model.input_convention``.
"""

from __future__ import annotations

import logging
import pickle
import re
from collections.abc import Mapping
from os import PathLike
from typing import Any

import torch

from sa2_pipeline.models import create_model
from sa2_pipeline.models.sa2net.model import SA2Net
from sa2_pipeline.user_errors import UserError

__all__ = [
    "OFFICIAL_INPUT_CONVENTION",
    "OfficialCheckpointError",
    "convert_official_state_dict",
    "load_official_checkpoint",
    "official_model_kwargs",
]

logger = logging.getLogger(__name__)

#: How inputs must be prepared for a model imported from the release.
OFFICIAL_INPUT_CONVENTION: dict[str, Any] = {
    "channel_order": "BGR",
    "scale": 1.0 / 255.0,  # uint8 -> [0, 1]
    "mean": None,
    "std": None,
}


def _build_module_map() -> dict[str, str]:
    """Release module path -> our module path (parameter/buffer names are unchanged)."""
    table = {
        "inc": "encoder.stages.0.convs.0",  # x1 (the one CBR)
        "side_conv5": "decoder.input_conv",  # x5 -> first AuA block
        "bottleneck.bn": "sa2.fuse_norm",  # BN(4C) before the fuse conv
        "bottleneck.conv": "sa2.fuse_conv",  # Conv3x3 4C -> C+4
        "bottleneck.qconv": "sa2.query_conv",  # DW5x5 on q
        "outc4": "head",  # main head on d1
        "outc3": "aux_heads.0",  # on d2
        "outc2": "aux_heads.1",  # on d3
        "outc1": "aux_heads.2",  # on d4
    }
    for k in range(1, 5):  # encoder stages x2..x5
        for j in range(2):
            table[f"down{k}.nConvs.{j}"] = f"encoder.stages.{k}.convs.{j}"
    for k in range(2, 5):  # side convs of x2..x4 feed the SA2 module
        table[f"side_conv{k}"] = f"sa2.side_convs.{k - 1}"
    for i in range(1, 5):  # SA2 scale i = x_i
        table[f"bottleneck.gcn{i}.project_in"] = f"sa2.msfns.{i - 1}.project_in"
        table[f"bottleneck.gcn{i}.dwconv3x3"] = f"sa2.msfns.{i - 1}.dwconv3"
        table[f"bottleneck.gcn{i}.dwconv5x5"] = f"sa2.msfns.{i - 1}.dwconv5"
        table[f"bottleneck.gcn{i}.project_out"] = f"sa2.msfns.{i - 1}.project_out"
        table[f"bottleneck.mlp{i}.norm"] = f"sa2.mlps.{i - 1}.norm"
        table[f"bottleneck.mlp{i}.pos"] = f"sa2.mlps.{i - 1}.dwconv"
        table[f"bottleneck.mlp{i}.fc1"] = f"sa2.mlps.{i - 1}.fc1"
        table[f"bottleneck.mlp{i}.fc2"] = f"sa2.mlps.{i - 1}.fc2"
        table[f"bottleneck.conv{i}"] = f"sa2.out_convs.{i - 1}"  # S_i
    for k in range(1, 5):  # AuA block up{k} = decoder.blocks[k-1]
        block = f"decoder.blocks.{k - 1}"
        table[f"up{k}.AG.dwconv.0"] = f"{block}.up_norm"
        table[f"up{k}.AG.dwconv.1"] = f"{block}.up_pw"
        table[f"up{k}.AG.dwconv.3"] = f"{block}.up_dw"
        table[f"up{k}.AG.conv.0"] = f"{block}.skip_dw"
        table[f"up{k}.AG.psi.0"] = f"{block}.psi_conv"
        table[f"up{k}.AG.psi.1"] = f"{block}.psi_norm"
        table[f"up{k}.AG.proj"] = f"{block}.skip_proj"
        for j in range(2):
            table[f"up{k}.nConvs.{j}"] = f"{block}.convs.{j}"
    return table


#: The release/ours module-name correspondence (release path -> our path). Entries name
#: modules; everything below a mapped module (``conv.weight``, ``norm.running_mean`` ...)
#: keeps its name.
_MODULE_MAP: dict[str, str] = _build_module_map()
_INVERSE_MAP: dict[str, str] = {ours: release for release, ours in _MODULE_MAP.items()}

#: Release modules that are built but never used by its forward pass: dropped.
_UNUSED = re.compile(
    r"^(Multi_scale_Fuse\d+\."
    r"|up\d+\.AG\.weight\."
    r"|bottleneck\.gcn\d+\.dwconv(3x3|5x5)_1\.)"
)


def _rename(key: str, table: Mapping[str, str]) -> str | None:
    """Rename ``key`` by its longest module prefix found in ``table`` (None if none)."""
    parts = key.split(".")
    for n in range(len(parts) - 1, 0, -1):
        target = table.get(".".join(parts[:n]))
        if target is not None:
            return ".".join([target, *parts[n:]])
    return None


class OfficialCheckpointError(UserError, ValueError):
    """A release state dict that does not match the SA2-Net architecture."""


def _unwrap(obj: Any) -> Mapping[str, Any]:
    """Return the state dict inside a release checkpoint (or ``obj`` if it is one)."""
    if not isinstance(obj, Mapping):
        raise OfficialCheckpointError(
            f"expected a checkpoint dict or a state dict, got {type(obj).__name__}"
        )
    if "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    non_tensors = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if non_tensors:
        raise OfficialCheckpointError(
            "not a state dict: these entries are not tensors: "
            + ", ".join(map(str, non_tensors[:10]))
            + (" ..." if len(non_tensors) > 10 else "")
            + f" (top-level keys: {', '.join(map(str, obj))[:300]})"
        )
    if obj and all(k.startswith("module.") for k in obj):  # DataParallel / DDP
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj


def official_model_kwargs(state_dict: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """Infer ``in_channels``, ``num_classes`` and ``base_channels`` from a state dict.

    Accepts either naming (release or converted).
    """
    for first, head in (
        ("inc.conv.weight", "outc4.weight"),
        (
            "encoder.stages.0.convs.0.conv.weight",
            "head.weight",
        ),
    ):
        if first in state_dict and head in state_dict:
            base, in_channels = state_dict[first].shape[:2]
            return {
                "in_channels": int(in_channels),
                "num_classes": int(state_dict[head].shape[0]),
                "base_channels": int(base),
            }
    raise OfficialCheckpointError(
        "cannot infer the model size: need 'inc.conv.weight' and 'outc4.weight' "
        "(release names) or 'encoder.stages.0.convs.0.conv.weight' and 'head.weight'"
    )


def _expected_shapes(kwargs: dict[str, int]) -> dict[str, torch.Size]:
    # Built on the meta device: shapes only, no memory, no initialisation cost.
    with torch.device("meta"):
        reference = SA2Net(**kwargs, deep_supervision=True)
    return {k: v.shape for k, v in reference.state_dict().items()}


def convert_official_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    """Convert a release checkpoint / state dict to this project's SA2Net names.

    Args:
        obj: What ``torch.load`` returns for a release file: a dict with a ``state_dict``
            entry, or a bare state dict; keys may carry a ``module.`` prefix. Any
            ``in_channels`` / ``num_classes`` / base width is accepted (read from the
            tensors).

    Returns:
        A state dict (the same tensor objects, not copies) that loads with
        ``strict=True`` into ``create_model("sa2net", **official_model_kwargs(result))``
        (deep supervision on: the release has the three auxiliary heads).

    Raises:
        OfficialCheckpointError (a ValueError): naming every missing release key, every
            key that is neither used nor known-unused, and every tensor whose shape is not
            what the architecture needs (expected vs got).
    """
    state_dict = _unwrap(obj)
    converted: dict[str, torch.Tensor] = {}
    source: dict[str, str] = {}  # our key -> release key, for error messages
    unexpected: list[str] = []
    dropped = 0
    for key, tensor in state_dict.items():
        if _UNUSED.match(key):
            dropped += 1
            continue
        target = _rename(key, _MODULE_MAP)
        if target is None:
            unexpected.append(key)
        else:
            converted[target] = tensor
            source[target] = key

    try:
        kwargs = official_model_kwargs(converted)
    except OfficialCheckpointError:
        kwargs = None  # names do not depend on sizes: still list what is missing
    expected = _expected_shapes(kwargs or {"in_channels": 1, "num_classes": 1, "base_channels": 1})
    unexpected += [source[k] for k in converted if k not in expected]
    missing = [_rename(k, _INVERSE_MAP) or k for k in expected if k not in converted]
    wrong_shape = [
        f"{source[k]} (-> {k}): expected {tuple(shape)}, got {tuple(converted[k].shape)}"
        for k, shape in expected.items()
        if kwargs is not None and k in converted and converted[k].shape != shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
    if wrong_shape:
        problems.append(f"wrong shapes ({len(wrong_shape)}): {'; '.join(wrong_shape)}")
    if problems:
        raise OfficialCheckpointError("not an SA2-Net release state dict: " + " | ".join(problems))
    logger.debug("converted %d release tensors, dropped %d unused", len(converted), dropped)
    return converted


def _numpy_scalar_globals() -> list[Any]:
    """Numpy scalar types that release metadata (``val_loss``, ``epoch``) may pickle.

    Safe to allow under ``weights_only``: they rebuild plain numbers, nothing callable.
    Files written with numpy 1.x name the scalar constructor ``numpy.core...``.
    """
    import numpy as np

    scalar = np._core.multiarray.scalar
    dtypes = [type(np.dtype(t)) for t in (np.float64, np.float32, np.float16, np.int64, np.int32)]
    return [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype, *dtypes]


def load_official_checkpoint(path: str | PathLike[str], *, weights_only: bool = True) -> SA2Net:
    """Load a release checkpoint file into a new :class:`SA2Net` (evaluation mode).

    Args:
        path: A release ``.pth``/``.pt`` file (or a saved bare state dict).
        weights_only: Unpickle with ``torch.load(weights_only=True)`` (no code execution).
            Pass False only for files you trust whose metadata needs arbitrary classes.

    Returns:
        The model, in eval mode, with ``model_name``, ``init_kwargs`` and
        ``input_convention`` (:data:`OFFICIAL_INPUT_CONVENTION`: BGR in [0, 1]) set.

    Raises:
        OfficialCheckpointError: The file's tensors do not match SA2-Net, or it cannot be
            unpickled safely with ``weights_only=True``.
    """
    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=weights_only)
    except pickle.UnpicklingError as err:
        if not weights_only:
            raise OfficialCheckpointError(f"{path}: not a PyTorch checkpoint ({err})") from err
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        default = lines[-1] if lines else "refused"
        reason = next((line for line in lines if "Unsupported" in line), default)[:300]
        raise OfficialCheckpointError(
            f"{path}: holds objects that are not plain weights ({reason}). If you trust the "
            "file, rerun the import with --trust."
        ) from err
    except Exception as err:  # noqa: BLE001 - torch.load raises many types on non-checkpoints
        raise OfficialCheckpointError(
            f"{path}: not a PyTorch checkpoint file (torch.load cannot read it)"
        ) from err
    try:
        state_dict = convert_official_state_dict(obj)
    except OfficialCheckpointError as err:
        raise OfficialCheckpointError(f"{path}: {err}") from None
    kwargs = official_model_kwargs(state_dict)
    model = create_model("sa2net", **kwargs, deep_supervision=True)
    model.load_state_dict(state_dict, strict=True)
    model.input_convention = dict(OFFICIAL_INPUT_CONVENTION)
    logger.info("loaded release SA2-Net checkpoint %s (%s)", path, kwargs)
    return model.eval()
