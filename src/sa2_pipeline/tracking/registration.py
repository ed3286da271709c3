"""Register a model version, gate it with statistics and promote it: locked, resumable.

Order of writes for one registration (all under the tracking store's registry lock,
:func:`sa2_pipeline.retraining.locks.registry_lock_path`, so two runs on one store never
interleave):

1. the model is logged to the active run;
2. the version is created **with** its identity tags in one call (bundle digest, test set,
   test scores, data version): there is never a version without them;
3. alias ``challenger``;
4. the champion is re-scored per image on the same test images through its own pyfunc;
   the statistical gate (:mod:`sa2_pipeline.retraining.gate`) decides; its numbers and
   decision are written as tags;
5. alias ``champion``, if promoted: the last write.

A rerun after a crash finds the version by its digest and test set. If the gate's
decision is missing (killed before 4), or says "promoted" while ``champion`` is elsewhere
(killed between 4 and 5), it finishes steps 3-5 on that version: nothing is registered
twice, and a gate never goes unrun.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from sa2_pipeline.retraining.gate import GateConfig, GateResult, statistical_gate

# One definition of the aliases, the tag prefix and the digest look-up, shared with the
# plain registry (registry.py imports MLflow only inside its functions).
from sa2_pipeline.tracking.registry import (
    CHALLENGER,
    CHAMPION,
    TAG_PREFIX,
    _identical_version,
)

logger = logging.getLogger(__name__)

DECISION_TAG = f"{TAG_PREFIX}promotion_decision"

__all__ = ["ModelToRegister", "champion_bundle_file", "load_pyfunc", "register_gated",
           "rollback_champion"]


class ModelToRegister:
    """What :func:`register_gated` registers: the bundle and how it scored."""

    def __init__(self, bundle: Any, *, model_name: str, test_scores: dict[str, float],
                 per_image: pd.DataFrame, test_set_id: str, data_version: str | None = None,
                 input_example_size: int = 64) -> None:
        self.bundle, self.model_name, self.test_scores = bundle, model_name, test_scores
        self.per_image, self.test_set_id = per_image, test_set_id
        self.data_version, self.input_example_size = data_version, input_example_size


def _lock(what: str, wait: float):
    import mlflow

    from sa2_pipeline.retraining.locks import exclusive_lock, registry_lock_path

    uri = mlflow.get_tracking_uri()
    return exclusive_lock(registry_lock_path(uri), wait=wait, what=f"{what} on {uri}")


def register_gated(
    model: ModelToRegister,
    *,
    gate: GateConfig,
    score_champion: Callable[[str], pd.DataFrame] | None,
    lock_wait: float = 1800.0,
) -> dict[str, Any]:
    """Register ``model`` (or finish its interrupted registration) and gate it.

    Args:
        model: The bundle, its test scores and per-image scores (index: image id).
        gate: The gate's settings.
        score_champion: ``score_champion(model_uri)`` -> the champion's per-image scores on
            the same test images (same columns as ``model.per_image``).
        lock_wait: Seconds to wait for another registration on this store.

    Returns:
        The registration record (``model_registration.json``).
    """
    from mlflow import MlflowClient

    from sa2_pipeline.models.bundle import bundle_digest

    with _lock("registration", lock_wait):
        client = MlflowClient()
        digest = bundle_digest(model.bundle)
        existing = _identical_version(client, model.model_name, digest, model.test_set_id)
        if existing is not None and _finished(client, model.model_name, existing):
            return _unchanged(client, model, existing, digest)
        if existing is not None:
            version, run_id, uri = str(existing.version), existing.run_id, existing.source
            logger.warning("%s version %s: its registration was interrupted; finishing it",
                           model.model_name, version)
        else:
            version, run_id, uri = _create_version(client, model, digest)
        client.set_registered_model_alias(model.model_name, CHALLENGER, version)
        result, champion = _run_gate(client, model, version, gate, score_champion)
        if result.promote:
            client.set_registered_model_alias(model.model_name, CHAMPION, version)
        logger.info("%s version %s: %s (%s)", model.model_name, version,
                    "promoted to champion" if result.promote else "kept as challenger",
                    result.reason)
        aliases = [CHALLENGER] + ([CHAMPION] if result.promote else [])
        return _record(model, version, uri, run_id, digest, aliases, result, champion,
                       unchanged=False)


def _create_version(client: Any, model: ModelToRegister, digest: str) -> tuple[str, str, str]:
    from mlflow.exceptions import MlflowException

    from sa2_pipeline.models.bundle import members_of
    from sa2_pipeline.tracking.registry import log_model_bundle, usage_tags

    info = log_model_bundle(model.bundle, input_example_size=model.input_example_size)
    members = members_of(model.bundle)
    # How to use it (pixel size, data version, commit, input convention), then identity.
    tags = {f"{TAG_PREFIX}{k}": v for k, v in usage_tags(model.bundle,
                                                          model.model_name).items()}
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


def _run_gate(client: Any, model: ModelToRegister, version: str, gate: GateConfig,
              score_champion: Callable[[str], pd.DataFrame] | None
              ) -> tuple[GateResult, str | None]:
    champion = _champion_version(client, model.model_name)
    if champion == version:  # promoted before: keep it
        champion = None
    champion_scores = None
    if champion is not None:
        if score_champion is None:
            raise ValueError("a champion exists but no way to score it was given")
        champion_scores = score_champion(f"models:/{model.model_name}/{champion}")
        logger.info("re-scored champion v%s on this test set (%d images)", champion,
                    len(champion_scores))
    result = statistical_gate(model.per_image, champion_scores, gate)
    tags = result.tags(f"{TAG_PREFIX}gate.")
    tags[DECISION_TAG] = "promoted" if result.promote else "rejected"
    tags[f"{TAG_PREFIX}promotion_reason"] = result.reason
    if champion is not None:
        tags[f"{TAG_PREFIX}champion_version"] = champion
        tags[f"{TAG_PREFIX}champion_score"] = f"{result.champion_mean:.6f}"
    for key, value in tags.items():
        client.set_model_version_tag(model.model_name, version, key, value)
    return result, champion


def _champion_version(client: Any, model_name: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(model_name, CHAMPION).version)
    except MlflowException:
        return None


def _finished(client: Any, model_name: str, version: Any) -> bool:
    """Its gate ran, and a promotion it decided was carried out.

    A promoted version that is not the champion now was champion once if a later gate
    compared against it or a rollback moved away from it; otherwise the process died
    between the decision and the alias, and the registration is not finished.
    """
    tags = version.tags or {}
    if tags.get(DECISION_TAG) is None:
        return False
    number = str(version.version)
    if tags[DECISION_TAG] != "promoted" or _champion_version(client, model_name) == number:
        return True
    others = client.search_model_versions(f"name = '{model_name}'")
    return any(number in ((v.tags or {}).get(f"{TAG_PREFIX}champion_version"),
                          (v.tags or {}).get(f"{TAG_PREFIX}rollback_from")) for v in others)


def _unchanged(client: Any, model: ModelToRegister, existing: Any, digest: str) -> dict:
    version = str(existing.version)
    full = client.get_model_version(model.model_name, version)  # searches omit aliases
    tags = full.tags or {}
    reason = (f"identical to version {version} (same weights and settings, same test set): "
              "not registered again")
    logger.info("%s: %s", model.model_name, reason)
    result = GateResult(False, reason, "dice")
    return {**_record(model, version, f"models:/{model.model_name}/{version}", full.run_id,
                      digest, sorted(getattr(full, "aliases", None) or []), result,
                      tags.get(f"{TAG_PREFIX}champion_version"), unchanged=True),
            "gate": {k.removeprefix(f"{TAG_PREFIX}gate."): v for k, v in tags.items()
                     if k.startswith(f"{TAG_PREFIX}gate.")}}


def _record(model: ModelToRegister, version: str, uri: str, run_id: str, digest: str,
            aliases: list[str], result: GateResult, champion: str | None, *,
            unchanged: bool) -> dict[str, Any]:
    return {
        "model_name": model.model_name, "version": version, "model_uri": uri,
        "run_id": run_id, "test_set_id": model.test_set_id, "bundle_digest": digest,
        "data_version": model.data_version, "unchanged": unchanged, "aliases": aliases,
        "decision_promote": result.promote, "decision_reason": result.reason,
        "decision_metric": "test_dice",
        "decision_champion_version": champion,
        "decision_candidate_score": model.test_scores.get("test_dice"),
        "decision_champion_score": result.champion_mean,
        "gate": result.as_dict(),
    }


def rollback_champion(model_name: str, to_version: str, *, reason: str = "",
                      lock_wait: float = 60.0) -> dict[str, str | None]:
    """Move ``champion`` of ``model_name`` to the earlier version ``to_version``.

    The version gets ``sa2.rollback_from`` (the previous champion) and
    ``sa2.rollback_reason`` tags first; the alias is the last write.

    Raises:
        ValueError: No such version.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    with _lock("rollback", lock_wait):
        client = MlflowClient()
        try:
            client.get_model_version(model_name, str(to_version))
        except MlflowException as err:
            raise ValueError(f"{model_name} has no version {to_version}") from err
        previous = _champion_version(client, model_name)
        client.set_model_version_tag(model_name, str(to_version), f"{TAG_PREFIX}rollback_from",
                                     str(previous))
        if reason:
            client.set_model_version_tag(model_name, str(to_version),
                                         f"{TAG_PREFIX}rollback_reason", reason)
        client.set_registered_model_alias(model_name, CHAMPION, str(to_version))
        return {"model_name": model_name, "from_version": previous,
                "to_version": str(to_version)}


def load_pyfunc(model_uri: str) -> Any:
    """A registered model as an MLflow pyfunc (``models:/<name>/<version>``...)."""
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(model_uri)


def champion_bundle_file(model_name: str, folder: str | Path) -> Path | None:
    """Download the champion's ``model_bundle.pt`` to ``folder/<name>-v<version>.pt``.

    Returns:
        The file, or None when ``model_name`` has no champion yet.
    """
    import shutil
    import tempfile

    import mlflow
    from mlflow import MlflowClient

    version = _champion_version(MlflowClient(), model_name)
    if version is None:
        return None
    target = Path(folder) / f"{model_name}-v{version}.pt"
    if target.is_file():
        return target
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{model_name}/{version}", dst_path=tmp))
        found = next(local.rglob("model_bundle.pt"), None)
        if found is None:
            raise FileNotFoundError(f"champion {model_name} v{version} has no model_bundle.pt")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        shutil.copyfile(found, partial)
        partial.replace(target)
    return target
