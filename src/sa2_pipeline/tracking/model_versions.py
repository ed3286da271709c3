"""The model registry's conventions, shared by registration, promotion and loading.

Conventions (docs/architecture.md): one registered model per dataset
(``sa2net-<dataset>``); every registered version gets the alias :data:`CHALLENGER`, and
:data:`CHAMPION` moves to it only when the promotion gate says so. Every tag this project
writes on a version starts with :data:`TAG_PREFIX`. Here are those names and the few
registry reads and writes everything else builds on: tagging a version, the champion's
version, the version a bundle was already registered as, and the lock that serialises
writes on one tracking store. MLflow is imported inside the functions.
"""

from __future__ import annotations

import contextlib
from typing import Any

from sa2_pipeline.io_utils import redact_uri
from sa2_pipeline.locks import exclusive_lock, registry_lock_path

CHAMPION = "champion"
CHALLENGER = "challenger"
TAG_PREFIX = "sa2."
#: ``promoted`` or ``rejected``: written once the gate has decided about a version.
DECISION_TAG = f"{TAG_PREFIX}promotion_decision"
#: Why the gate decided so (written with :data:`DECISION_TAG`).
REASON_TAG = f"{TAG_PREFIX}promotion_reason"

__all__ = ["CHALLENGER", "CHAMPION", "DECISION_TAG", "REASON_TAG", "TAG_PREFIX",
           "champion_version",
           "find_identical_version", "registry_lock", "set_version_tags"]


def set_version_tags(client: Any, model_name: str, version: str,
                     tags: dict[str, str]) -> None:
    """Tag a model version; every key gets the project's :data:`TAG_PREFIX`."""
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version, f"{TAG_PREFIX}{key}", value)


def champion_version(client: Any, model_name: str) -> str | None:
    """The version :data:`CHAMPION` points at, or None (no champion, no such model)."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(model_name, CHAMPION).version)
    except MlflowException:
        return None


def find_identical_version(client: Any, model_name: str, digest: str,
                           test_set_id: str) -> Any:
    """The newest version of ``model_name`` with this bundle digest and test set, or None."""
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name = '{model_name}'")
    except MlflowException:
        return None
    same = [v for v in versions
            if (v.tags or {}).get(f"{TAG_PREFIX}bundle_digest") == digest
            and (v.tags or {}).get(f"{TAG_PREFIX}test_set_id") == test_set_id]
    return max(same, key=lambda v: int(v.version), default=None)


def registry_lock(what: str, wait: float) -> contextlib.AbstractContextManager:
    """The lock of the current tracking store (:func:`sa2_pipeline.locks.registry_lock_path`):
    held while a version is registered and gated, or the champion is moved."""
    import mlflow


    uri = mlflow.get_tracking_uri()
    return exclusive_lock(registry_lock_path(uri), wait=wait,
                          what=f"{what} on {redact_uri(uri)}")
