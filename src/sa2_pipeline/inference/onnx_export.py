"""A network exported to ONNX for an inference engine: one fixed tile, a dynamic batch.

The sliding window only ever feeds the network tiles of one size (the window's patch,
mirrored border included: the border is cut into the tiles, it does not enlarge them), so
the export fixes height and width and leaves only the batch dynamic. A dynamic height and
width would bake one branch of the model's pad-to-a-multiple into the graph, and an input
of another size would then fail in every runtime (docs/inference.md).

The exporter is PyTorch's TorchScript exporter (``torch.onnx.export(dynamo=False)``): for
SA2-Net with C = 16 it took 1.9 s where the dynamo exporter took 9.2 s on the same
machine, with the same outputs (largest probability difference 6e-8 against eager in
both); see docs/inference.md. Where the TorchScript exporter fails (a future torch without
it), the dynamo exporter is tried.

Each export is written atomically (a temporary file in the same folder, then renamed):
a crash never leaves a half-written ``.onnx`` that a runtime would load.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sa2_pipeline.models.bundle import members_of, model_from_bundle

__all__ = ["EXPORT_FOLDER", "INPUT_NAME", "OPSET", "OUTPUT_NAME", "bundle_tile",
           "export_members", "export_model"]

logger = logging.getLogger(__name__)

#: The ONNX opset of every export (recorded on the model version as ``sa2.onnx.opset``).
OPSET = 18
#: Names of the graph's one input ``(batch, C, h, w)`` float32 in [0, 1] and one output
#: ``(batch, num_classes, h, w)`` logits.
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
#: The folder of the exports inside a logged MLflow model's artifacts (one file per
#: ensemble member, ``member_<i>.onnx``).
EXPORT_FOLDER = "onnx"


def bundle_tile(bundle: dict[str, Any], patch_size: int | None = None) -> tuple[int, int]:
    """The tile a bundle's network sees in the sliding window: ``patch_size`` (default the
    bundle's training patch, 256 if unrecorded), at least its ``resize_to`` side (models
    trained on resized images see the whole resized image), as
    :class:`~sa2_pipeline.inference.predict.Predictor` cuts it."""
    side = int(bundle.get("resize_to") or 0)
    patch = int(patch_size or bundle.get("patch_size", 256))
    tile = max(patch, side)
    return (tile, tile)


def _first_output(model: Any) -> Any:
    """``model`` returning only its final prediction (not a deep-supervision tuple)."""
    from torch import nn

    class FirstOutput(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x):  # noqa: ANN001, ANN202
            out = self.inner(x)
            return out[0] if isinstance(out, tuple | list) else out

    return FirstOutput(model)


def export_model(model: Any, path: str | Path, tile: tuple[int, int], in_channels: int,
                 *, opset: int = OPSET, dynamo: bool = False) -> dict[str, Any]:
    """Export ``model`` (eval mode, CPU, fp32) to ``path``: fixed ``tile``, dynamic batch.

    Returns:
        ``{"file", "opset", "tile", "exporter", "export_s"}``.

    Raises:
        RuntimeError: Neither exporter could export the model (the message says why).
    """
    import copy
    import warnings

    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapped = _first_output(copy.deepcopy(model).float().cpu()).eval()
    example = torch.rand(2, in_channels, *tile)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    start = time.perf_counter()
    errors = []
    for use_dynamo in ((dynamo,) if dynamo else (False, True)):
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the exporters' deprecation notices
                _export(torch, wrapped, example, partial, opset, use_dynamo)
        except Exception as err:  # noqa: BLE001 - any exporter failure: try the other
            errors.append(f"{'dynamo' if use_dynamo else 'torchscript'}: "
                          f"{type(err).__name__}: {err}")
            partial.unlink(missing_ok=True)
            continue
        partial.replace(path)
        seconds = time.perf_counter() - start
        exporter = "dynamo" if use_dynamo else "torchscript"
        logger.info("exported %s to ONNX (%s exporter, opset %d, tile %dx%d) in %.1f s",
                    type(model).__name__, exporter, opset, *tile, seconds)
        return {"file": str(path), "opset": opset, "tile": list(tile), "exporter": exporter,
                "export_s": round(seconds, 2)}
    raise RuntimeError("ONNX export failed: " + "; ".join(errors))


def _export(torch: Any, model: Any, example: Any, path: Path, opset: int,
            dynamo: bool) -> None:
    if dynamo:
        batch = torch.export.Dim("batch", min=1, max=1024)
        torch.onnx.export(model, (example,), str(path), input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], opset_version=opset, dynamo=True,
                          dynamic_shapes=({0: batch},), external_data=False)
    else:
        torch.onnx.export(model, (example,), str(path), input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], opset_version=opset, dynamo=False,
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})


def export_members(bundles: Any, folder: str | Path, *,
                   patch_size: int | None = None) -> list[dict[str, Any]]:
    """Export every member of a bundle (or fold ensemble) to ``folder/member_<i>.onnx``.

    Returns:
        One :func:`export_model` record per member, in member order.
    """
    records = []
    for index, bundle in enumerate(members_of(bundles)):
        model = model_from_bundle(bundle)
        in_channels = int(bundle["init_kwargs"].get("in_channels", 3))
        records.append(export_model(model, Path(folder) / f"member_{index}.onnx",
                                    bundle_tile(bundle, patch_size), in_channels))
    return records


def member_files(folder: str | Path, count: int) -> list[Path] | None:
    """The ``count`` member exports in ``folder``; None when any is missing."""
    files = [Path(folder) / f"member_{i}.onnx" for i in range(count)]
    return files if all(f.is_file() for f in files) else None


def summary_tags(records: Sequence[dict[str, Any]]) -> dict[str, str]:
    """What the exports were, as version tags (without the ``sa2.`` prefix)."""
    first = records[0]
    return {"onnx.opset": str(first["opset"]),
            "onnx.tile": "x".join(str(v) for v in first["tile"]),
            "onnx.exporter": first["exporter"],
            "onnx.export_s": f"{sum(r['export_s'] for r in records):.2f}"}
