"""Export a model for the engines and check it before it is trusted (registration).

:func:`export_checked` exports every member (:mod:`~sa2_pipeline.inference.onnx_export`),
then segments the parity images twice, through the same sliding window: once with the
eager network in fp32, once with the export in ONNX Runtime fp32 (OpenVINO fp32 where
ONNX Runtime is not installed). The export passes when the probabilities differ by at
most :data:`~sa2_pipeline.inference.engine_probe.PROB_TOLERANCE` everywhere and the masks
agree on at least :data:`~sa2_pipeline.inference.engine_probe.MASK_AGREEMENT` of the
pixels. A failed check (or an export that fails, or no runtime to check it with) returns
no files and the reason: the caller registers the version without an export and tags why.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sa2_pipeline.inference.engine_probe import MASK_AGREEMENT, PROB_TOLERANCE, fixed_tile
from sa2_pipeline.inference.engine_sessions import runtime_version
from sa2_pipeline.inference.engines import engine_predictor
from sa2_pipeline.inference.onnx_export import bundle_tile, export_members, summary_tags
from sa2_pipeline.inference.predict import Predictor, probabilities_to_mask
from sa2_pipeline.models.bundle import members_of

__all__ = ["export_checked", "parity_images"]

logger = logging.getLogger(__name__)


def parity_images(bundle: Any, count: int = 2, seed: int = 0) -> list[np.ndarray]:
    """Seeded images for a check without a test set (an imported release): smooth colour
    fields with texture, one and a half tiles on a side (so the window cuts several tiles
    and mirrors a border)."""
    first = members_of(bundle)[0]
    side = bundle_tile(first)[0] * 3 // 2
    channels = int(first["init_kwargs"].get("in_channels", 3))
    batch = fixed_tile(count, channels, (side, side), seed=seed).numpy()
    return [np.ascontiguousarray((b.transpose(1, 2, 0) * 255).round().astype(np.uint8))
            for b in batch]


def export_checked(bundle: Any, folder: str | Path,
                   images: Sequence[np.ndarray] | None = None) -> dict[str, Any]:
    """Export ``bundle`` into ``folder`` and check it on ``images`` (uint8 HWC).

    Returns:
        ``{"files": [member exports] or None, "tags": {...}}``; the tags (without the
        ``sa2.`` prefix) say what was exported and how it compared, or why it was not.
    """
    start = time.perf_counter()
    source = "test set"
    if images is None or len(images) == 0:
        images, source = parity_images(bundle), "synthetic"
    engine = next((e for e in ("onnxruntime", "openvino") if runtime_version(e)), None)
    if engine is None:
        return _failed("neither onnxruntime nor openvino is installed to check it")
    try:
        records = export_members(bundle, folder)
    except RuntimeError as err:
        return _failed(str(err))
    files = [Path(r["file"]) for r in records]
    eager = Predictor(bundle, device="cpu", tta=False)
    exported = engine_predictor(bundle, device="cpu", tta=False, engine=engine,
                                onnx_files=files)
    if exported.engine.engine != engine:
        return _failed(f"{engine} could not run it: {exported.engine.reason}")
    diff, same, total = 0.0, 0, 0
    for image in images:
        for ref, got in zip(eager.member_probabilities(image, native=False),
                            exported.member_probabilities(image, native=False), strict=True):
            diff = max(diff, float(np.abs(ref - got).max()))
            same += int((probabilities_to_mask(ref) == probabilities_to_mask(got)).sum())
            total += ref.shape[-1] * ref.shape[-2]
    agreement = same / max(total, 1)
    tags = {**summary_tags(records), "onnx.max_prob_diff": f"{diff:.3g}",
            "onnx.mask_agreement": f"{agreement:.6f}", "onnx.parity_engine": engine,
            "onnx.parity_images": f"{source}, {len(images)} image(s)",
            "onnx.check_s": f"{time.perf_counter() - start:.2f}"}
    if diff > PROB_TOLERANCE or agreement < MASK_AGREEMENT:
        reason = (f"parity check failed: probabilities differ by up to {diff:.3g} (allowed "
                  f"{PROB_TOLERANCE:g}), masks agree on {agreement:.4%} (needed "
                  f"{MASK_AGREEMENT:.2%})")
        logger.warning("ONNX export not kept: %s", reason)
        for path in files:
            path.unlink(missing_ok=True)
        return {"files": None, "tags": {**tags, "onnx.status": f"not exported: {reason}"}}
    logger.info("ONNX export checked on %s: max probability difference %.3g, masks agree "
                "on %.4f%%", tags["onnx.parity_images"], diff, 100 * agreement)
    return {"files": files, "tags": {**tags, "onnx.status": "exported"}}


def _failed(reason: str) -> dict[str, Any]:
    logger.warning("ONNX export not kept: %s", reason)
    return {"files": None, "tags": {"onnx.status": f"not exported: {reason}"}}
