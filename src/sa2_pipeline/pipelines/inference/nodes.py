"""Segment a folder of images and slides with one registered model version."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sa2_pipeline.config import InferenceConfig, RegistryConfig, parse
from sa2_pipeline.inference.run import predictor_settings, run_folder
from sa2_pipeline.tracking.model_loading import load_predictor, log_engine_choice, resolve_model
from sa2_pipeline.user_errors import UserError, check_output_folder

logger = logging.getLogger(__name__)


class ModelNotFoundError(UserError, ValueError):
    """The model to segment with is not in the registry (no champion yet, a bad URI)."""


def segment_folder(params: dict[str, Any], registry: dict[str, Any]) -> dict[str, Any]:
    """Segment every input of ``inference.input_dir`` (resumable, split by parts).

    The model (``inference.model_uri``, default ``models:/<registry.model_name>@champion``)
    is resolved to one version first; outputs go to ``<output_dir>/<name>-v<version>/``.
    Returns the run summary (also written as ``manifest.json`` there).
    """

    cfg = parse(InferenceConfig, params, "inference")
    model_name = parse(RegistryConfig, registry, "registry").model_name
    try:
        model = resolve_model(cfg.model_uri or f"models:/{model_name}@champion")
    except ValueError as err:
        if cfg.model_uri:
            raise ModelNotFoundError(f"inference.model_uri: {err}") from err
        raise ModelNotFoundError(f"no champion for {model_name} yet: run the training "
                                 f"pipeline first, or set inference.model_uri ({err})"
                                 ) from err
    check_output_folder(cfg.output_dir, "inference.output_dir")
    logger.info("model %s resolved to version %s (%s)", model.requested_uri, model.version,
                model.uri)
    summary = run_folder(cfg, model, lambda device: load_predictor(
        model, device=device, **predictor_settings(cfg)))
    log_engine_choice(summary.get("engine"))
    return summary


def report_failures(summary: dict[str, Any]) -> None:
    """End the run with the number of failed inputs as its exit status (0 when none)."""
    failed = summary.get("failed", {})
    if not failed:
        return
    for name, reason in failed.items():
        logger.error("%s: %s", name, reason)
    logger.error("%d of %d input(s) failed; outputs are in %s", len(failed),
                 summary["total"], Path(summary["out_dir"]))
    # SystemExit passes through Kedro's runner: the process exits with this status.
    raise SystemExit(min(len(failed), 100))
