"""Who is champion: gate a new version against the champion, move the aliases, roll back.

The decision itself is :func:`sa2_pipeline.metrics.promotion.statistical_gate` (pure
statistics); here the champion is re-scored per image on the same test images through
its own pyfunc, the gate's numbers and decision are written on the version as tags
(``sa2.gate.*``, ``sa2.promotion_decision``...), and ``champion`` moves to the version
only when it wins. The champion alias is always the last write, so a crash at any earlier
point leaves the registry's champion untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sa2_pipeline.metrics.promotion import GateResult, statistical_gate
from sa2_pipeline.tracking.model_versions import (
    CHALLENGER,
    CHAMPION,
    DECISION_TAG,
    REASON_TAG,
    TAG_PREFIX,
    champion_version,
    registry_lock,
    set_version_tags,
)

if TYPE_CHECKING:
    import pandas as pd

    from sa2_pipeline.config import RegistryConfig

logger = logging.getLogger(__name__)

__all__ = ["RollbackRefusedError", "gate_and_promote", "gate_finished", "rollback_champion"]


def gate_and_promote(
    client: Any,
    model_name: str,
    version: str,
    per_image: pd.DataFrame,
    config: RegistryConfig,
    score_champion: Callable[[str], pd.DataFrame] | None,
) -> tuple[GateResult, str | None, list[str]]:
    """Make ``version`` the challenger, gate it against the champion and promote it if it
    wins (the caller holds the registry lock).

    Args:
        per_image: The version's per-image scores on the frozen test set (index: image id).
        config: ``params:registry``, the gate's settings.
        score_champion: ``score_champion(model_uri)`` -> the champion's per-image scores
            on the same test images (same columns as ``per_image``).

    Returns:
        The gate's result, the champion it was compared with (None: no champion) and the
        version's aliases now.
    """
    client.set_registered_model_alias(model_name, CHALLENGER, version)
    result, champion = _run_gate(client, model_name, version, per_image, config,
                                 score_champion)
    if result.promote:
        client.set_registered_model_alias(model_name, CHAMPION, version)
    logger.info("%s version %s: %s (%s)", model_name, version,
                "promoted to champion" if result.promote else "kept as challenger",
                result.reason)
    return result, champion, [CHALLENGER] + ([CHAMPION] if result.promote else [])


def _run_gate(client: Any, model_name: str, version: str, per_image: pd.DataFrame,
              config: RegistryConfig, score_champion: Callable[[str], pd.DataFrame] | None
              ) -> tuple[GateResult, str | None]:
    champion = champion_version(client, model_name)
    if champion == version:  # promoted before: keep it
        champion = None
    champion_scores = None
    if champion is not None:
        if score_champion is None:
            raise ValueError("a champion exists but no way to score it was given")
        champion_scores = score_champion(f"models:/{model_name}/{champion}")
        logger.info("re-scored champion v%s on this test set (%d images)", champion,
                    len(champion_scores))
    result = statistical_gate(per_image, champion_scores, config)
    tags = result.tags(f"{TAG_PREFIX}gate.")
    tags[DECISION_TAG] = "promoted" if result.promote else "rejected"
    tags[REASON_TAG] = result.reason
    if champion is not None:
        tags[f"{TAG_PREFIX}champion_version"] = champion
        tags[f"{TAG_PREFIX}champion_score"] = f"{result.champion_mean:.6f}"
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version, key, value)
    return result, champion


def gate_finished(client: Any, model_name: str, version: Any) -> bool:
    """Its gate ran, and a promotion it decided was carried out.

    A promoted version that is not the champion now was champion once if a later gate
    compared against it or a rollback moved away from it; otherwise the process died
    between the decision and the alias, and the registration is not finished.
    """
    tags = version.tags or {}
    if tags.get(DECISION_TAG) is None:
        return False
    number = str(version.version)
    if tags[DECISION_TAG] != "promoted" or champion_version(client, model_name) == number:
        return True
    others = client.search_model_versions(f"name = '{model_name}'")
    return any(number in ((v.tags or {}).get(f"{TAG_PREFIX}champion_version"),
                          (v.tags or {}).get(f"{TAG_PREFIX}rollback_from")) for v in others)


class RollbackRefusedError(ValueError):
    """The rollback target was rejected by the promotion gate and ``force`` was not given."""


def rollback_champion(model_name: str, to_version: str, *, reason: str = "",
                      force: bool = False, lock_wait: float = 60.0) -> dict[str, Any]:
    """Move ``champion`` of ``model_name`` to the earlier version ``to_version``.

    Nothing is written when ``to_version`` is already the champion (``changed`` False).
    A version the promotion gate rejected (``sa2.promotion_decision`` = rejected) is
    refused unless ``force``; a forced rollback records ``sa2.rollback_forced`` and the
    gate's reason (``sa2.rollback_gate_reason``). The version gets ``sa2.rollback_from``
    (the previous champion) and ``sa2.rollback_reason`` tags first; the alias is the last
    write.

    Returns:
        ``model_name``, ``from_version``, ``to_version``, ``changed`` (the alias moved),
        ``forced`` (a gate-rejected version was made champion) and ``gate_reason``.

    Raises:
        RollbackRefusedError: The gate rejected ``to_version`` and ``force`` is False.
        ValueError: No such version.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    target = str(to_version)
    with registry_lock("rollback", lock_wait):
        client = MlflowClient()
        try:
            version = client.get_model_version(model_name, target)
        except MlflowException as err:
            if err.error_code != "RESOURCE_DOES_NOT_EXIST":  # e.g. the server is down
                raise
            raise ValueError(f"{model_name} has no version {target}") from err
        tags = version.tags or {}
        rejected = tags.get(DECISION_TAG) == "rejected"
        gate_reason = tags.get(REASON_TAG) or tags.get(f"{TAG_PREFIX}gate.reason") or ""
        previous = champion_version(client, model_name)
        outcome: dict[str, Any] = {"model_name": model_name, "from_version": previous,
                                   "to_version": target, "changed": previous != target,
                                   "forced": False, "gate_reason": gate_reason or None}
        if previous == target:
            return outcome
        if rejected and not force:
            raise RollbackRefusedError(
                f"the promotion gate rejected {model_name} version {target}: "
                f"{gate_reason or 'no reason recorded'}. Pass --force to roll back to it "
                "anyway; nothing was changed")
        rollback_tags = {"rollback_from": str(previous)}
        if reason:
            rollback_tags["rollback_reason"] = reason
        if rejected:
            rollback_tags["rollback_forced"] = "true"
            rollback_tags["rollback_gate_reason"] = gate_reason or "no reason recorded"
            outcome["forced"] = True
        set_version_tags(client, model_name, target, rollback_tags)
        client.set_registered_model_alias(model_name, CHAMPION, target)
        return outcome
