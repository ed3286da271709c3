"""Create model versions: the gated registration of a trained model, and the import of a
release model.

Order of writes for one gated registration (all under the tracking store's registry lock,
:func:`sa2_pipeline.tracking.model_versions.registry_lock`, so two runs on one store
never interleave):

1. the network is exported to ONNX and checked against eager on the held-out test images
   (:mod:`sa2_pipeline.inference.export_check`); the model is logged to the active run
   (:mod:`sa2_pipeline.tracking.mlflow_model`), with the export only if it passed;
2. the version is created **with** its identity tags in one call (bundle digest, test set,
   test scores, data version, the export's ``sa2.onnx.*`` figures or why there is none):
   there is never a version without them;
3. alias ``challenger``;
4. the champion is re-scored per image on the same test images through its own pyfunc;
   the statistical gate (:mod:`sa2_pipeline.metrics.promotion`) decides; its numbers and
   decision are written as tags (:mod:`sa2_pipeline.tracking.champion`);
5. alias ``champion``, if promoted: the last write.

Registration is idempotent: a bundle identical to an existing version (same architecture,
settings and weights: ``sa2.bundle_digest``), scored on the same test set, is not logged
or registered again; the record points at that version. A rerun after a crash finds the
version the same way. If the gate's decision is missing (killed before 4), or says
"promoted" while ``champion`` is elsewhere (killed between 4 and 5), it finishes steps
3-5 on that version: nothing is registered twice, and a gate never goes unrun.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sa2_pipeline.inference.export_check import export_checked
from sa2_pipeline.metrics.promotion import require_metric
from sa2_pipeline.models.bundle import bundle_digest, members_of
from sa2_pipeline.tracking.champion import gate_and_promote, gate_finished
from sa2_pipeline.tracking.mlflow_model import log_model_bundle, usage_tags
from sa2_pipeline.tracking.model_versions import (
    CHAMPION,
    TAG_PREFIX,
    find_identical_version,
    registry_lock,
    set_version_tags,
)

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from sa2_pipeline.config import RegistryConfig

logger = logging.getLogger(__name__)

__all__ = ["ModelToRegister", "register_gated", "register_release"]


class ModelToRegister:
    """What :func:`register_gated` registers: the bundle and how it scored."""

    def __init__(self, bundle: Any, *, model_name: str, test_scores: dict[str, float],
                 per_image: pd.DataFrame, test_set_id: str, data_version: str | None = None,
                 input_example_size: int = 64,
                 parity_images: list[np.ndarray] | None = None) -> None:
        self.bundle, self.model_name, self.test_scores = bundle, model_name, test_scores
        self.per_image, self.test_set_id = per_image, test_set_id
        self.data_version, self.input_example_size = data_version, input_example_size
        #: The held-out test images the ONNX export is checked on (None: seeded images).
        self.parity_images = parity_images


def register_gated(
    model: ModelToRegister,
    *,
    config: RegistryConfig,
    score_champion: Callable[[str], pd.DataFrame] | None,
    lock_wait: float = 1800.0,
) -> dict[str, Any]:
    """Register ``model`` (or finish its interrupted registration) and gate it.

    Args:
        model: The bundle, its test scores and per-image scores (index: image id).
        config: ``params:registry``: the gate's settings.
        score_champion: ``score_champion(model_uri)`` -> the champion's per-image scores on
            the same test images (same columns as ``model.per_image``).
        lock_wait: Seconds to wait for another registration on this store.

    Returns:
        The registration record (``model_registration.json``).

    Raises:
        KeyError: ``model.per_image`` has no column of the gate's metric; nothing is
            registered.
    """
    from mlflow import MlflowClient


    require_metric(model.per_image)
    with registry_lock("registration", lock_wait):
        client = MlflowClient()
        digest = bundle_digest(model.bundle)
        existing = find_identical_version(client, model.model_name, digest, model.test_set_id)
        if existing is not None and gate_finished(client, model.model_name, existing):
            return _unchanged(client, model, existing, digest)
        if existing is not None:
            version, run_id, uri = str(existing.version), existing.run_id, existing.source
            logger.warning("%s version %s: its registration was interrupted; finishing it",
                           model.model_name, version)
        else:
            version, run_id, uri = _create_version(client, model, digest)
        result, champion, aliases = gate_and_promote(client, model.model_name, version,
                                                     model.per_image, config, score_champion)
        # The record states the data version the version's tag holds (usage_tags' DVC hash
        # unless registry.data_version overrides it), not only the override.
        tags = client.get_model_version(model.model_name, version).tags or {}
        return _record(model, version, uri, run_id, digest, aliases, unchanged=False,
                       promote=result.promote, reason=result.reason, champion=champion,
                       champion_score=result.champion_mean, gate=result.as_dict(),
                       data_version=tags.get(f"{TAG_PREFIX}data_version", model.data_version))


def _create_version(client: Any, model: ModelToRegister, digest: str) -> tuple[str, str, str]:
    from mlflow.exceptions import MlflowException


    info, export_tags = _log_with_export(model.bundle, model.input_example_size,
                                         model.parity_images)
    members = members_of(model.bundle)
    # How to use it (pixel size, data version, commit, input convention), then identity.
    tags = {f"{TAG_PREFIX}{k}": v for k, v in usage_tags(model.bundle,
                                                          model.model_name).items()}
    tags.update({f"{TAG_PREFIX}{k}": v for k, v in export_tags.items()})
    tags.update({f"{TAG_PREFIX}{k}": f"{v:.6f}" for k, v in model.test_scores.items()})
    tags.update({f"{TAG_PREFIX}test_set_id": model.test_set_id,
                 f"{TAG_PREFIX}bundle_digest": digest,
                 f"{TAG_PREFIX}ensemble_size": str(len(members))})
    if model.data_version:
        tags[f"{TAG_PREFIX}data_version"] = model.data_version
    try:
        client.create_registered_model(model.model_name)
    except MlflowException as err:
        if "RESOURCE_ALREADY_EXISTS" not in str(err.error_code):
            raise
    # model_id: a tracking server refuses a models:/<id> source without it
    mv = client.create_model_version(model.model_name, source=info.model_uri,
                                     run_id=info.run_id, tags=tags,
                                     model_id=getattr(info, "model_id", None))
    return str(mv.version), info.run_id, info.model_uri


def _log_with_export(bundle: Any, input_example_size: int = 64,
                     images: list[np.ndarray] | None = None) -> tuple[Any, dict[str, str]]:
    """Export the network to ONNX, check it (:mod:`sa2_pipeline.inference.export_check`),
    and log the model with the export when it passed; the export's tags either way."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="sa2-onnx-") as tmp:
        folder = Path(tmp) / "onnx"
        export = export_checked(bundle, folder, images)
        info = log_model_bundle(bundle, input_example_size=input_example_size,
                                onnx_dir=folder if export["files"] else None)
    return info, export["tags"]


def _unchanged(client: Any, model: ModelToRegister, existing: Any, digest: str) -> dict:
    version = str(existing.version)
    full = client.get_model_version(model.model_name, version)  # searches omit aliases
    tags = full.tags or {}
    reason = (f"identical to version {version} (same weights and settings, same test set): "
              "not registered again")
    logger.info("%s: %s", model.model_name, reason)
    gate = {k.removeprefix(f"{TAG_PREFIX}gate."): v for k, v in tags.items()
            if k.startswith(f"{TAG_PREFIX}gate.")}
    return _record(model, version, f"models:/{model.model_name}/{version}", full.run_id,
                   digest, sorted(getattr(full, "aliases", None) or []), unchanged=True,
                   promote=False, reason=reason,
                   champion=_champion_now(client, model.model_name), champion_score=None,
                   gate=gate,
                   data_version=tags.get(f"{TAG_PREFIX}data_version", model.data_version))


def _champion_now(client: Any, name: str) -> str | None:
    """The version ``champion`` names now (``None`` when no version holds it)."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        return None


def _record(model: ModelToRegister, version: str, uri: str, run_id: str, digest: str,
            aliases: list[str], *, unchanged: bool, promote: bool, reason: str,
            champion: str | None, champion_score: float | None,
            gate: dict[str, Any], data_version: str | None) -> dict[str, Any]:
    return {
        "model_name": model.model_name, "version": version, "model_uri": uri,
        "run_id": run_id, "test_set_id": model.test_set_id, "bundle_digest": digest,
        "data_version": data_version, "unchanged": unchanged, "aliases": aliases,
        "decision_promote": promote, "decision_reason": reason,
        "decision_metric": "test_dice",
        "decision_champion_version": champion,
        "decision_candidate_score": model.test_scores.get("test_dice"),
        "decision_champion_score": champion_score,
        "gate": gate,
    }


def register_release(
    bundle: dict[str, Any],
    *,
    model_name: str,
    experiment: str,
    run_name: str,
    run_tags: dict[str, str],
    params: dict[str, Any],
    alias: str,
) -> dict[str, str]:
    """Log an imported release model in a new run of ``experiment``, register it and set
    ``alias`` on the version (no promotion gate: it has no test score of ours).

    ``run_tags`` are set on the run with the ``sa2.`` prefix; the version is tagged
    ``sa2.source = release`` and with its :func:`~sa2_pipeline.tracking.mlflow_model.usage_tags`.

    Returns:
        ``model_name``, ``version``, ``run_id`` and ``alias``.
    """
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=run_name) as run:
        mlflow.set_tags({f"{TAG_PREFIX}{k}": v for k, v in run_tags.items()})
        mlflow.log_params(params)
        info, export_tags = _log_with_export(bundle)
        version = str(mlflow.register_model(info.model_uri, model_name).version)
    client = MlflowClient()
    set_version_tags(client, model_name, version, {"source": "release",
                                                   **usage_tags(bundle, model_name),
                                                   **export_tags})
    client.set_registered_model_alias(model_name, alias, version)
    return {"model_name": model_name, "version": version, "run_id": run.info.run_id,
            "alias": alias}
