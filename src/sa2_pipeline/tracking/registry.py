"""Log a model bundle as an MLflow pyfunc, register it and run the promotion gate.

Conventions (docs/architecture.md): one registered model per dataset (``sa2net-<dataset>``); every
registered version gets the alias ``challenger``; ``champion`` moves to it only when it
beats the current champion on the same frozen test set by ``margin``. The decision and
both scores are written on the version as tags. The champion alias is the very last thing
written, so a crash at any earlier point leaves the registry's champion untouched.

Registration is idempotent: every version carries ``sa2.bundle_digest`` (a hash of the
architecture, settings and weights) and a bundle identical to an existing version, scored
on the same test set, is not logged or registered again; the record points at that version.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
TAG_PREFIX = "sa2."


@dataclass(frozen=True)
class PromotionDecision:
    """Outcome of the promotion gate, recorded on the model version."""

    promote: bool
    reason: str
    metric: str
    candidate_score: float
    champion_score: float | None
    champion_version: str | None
    margin: float


def decide_promotion(
    candidate_score: float,
    champion_score: float | None,
    *,
    metric: str,
    margin: float,
    champion_version: str | None = None,
) -> PromotionDecision:
    """Promote when there is no champion, or the candidate beats it by more than ``margin``."""
    if champion_score is None:
        return PromotionDecision(True, "no champion yet", metric, candidate_score, None,
                                 champion_version, margin)
    if candidate_score > champion_score + margin:
        reason = f"{metric} {candidate_score:.4f} > champion {champion_score:.4f} + {margin}"
        return PromotionDecision(True, reason, metric, candidate_score, champion_score,
                                 champion_version, margin)
    reason = f"{metric} {candidate_score:.4f} <= champion {champion_score:.4f} + {margin}"
    return PromotionDecision(False, reason, metric, candidate_score, champion_score,
                             champion_version, margin)


def model_signature():
    """The params ``threshold`` (double, 0.5) and ``tta`` (boolean, false) and the uint8
    label mask ``(H, W)`` out. No input schema: the pyfunc takes two input forms (an
    ``(H, W, 3)`` 0-255 array, or a one-row table with an encoded image) and checks them
    itself, refusing floats that a uint8 tensor schema would make the scoring server cast
    (tracking/pyfunc.py, docs/inference.md)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec, Schema, TensorSpec

    return ModelSignature(
        inputs=None,
        outputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1))]),
        params=ParamSchema([ParamSpec("threshold", "double", 0.5),
                            ParamSpec("tta", "boolean", False)]),
    )


def usage_tags(bundle: dict[str, Any] | list, model_name: str,
               root: str | Path = ".") -> dict[str, str]:
    """What a user needs to use a version correctly, as version tags (without
    :data:`TAG_PREFIX`, see :func:`set_version_tags`): the training pixel
    size (bundle metadata ``pixel_size_um``), the raw data's DVC hash (``dvc.lock``, or the
    ``data/01_raw/<dataset>.dvc`` file; the dataset is the one ``sa2net-<dataset>`` names),
    the git commit, and the input convention. ``unknown`` where a value is not known."""
    from sa2_pipeline.models.bundle import members_of
    from sa2_pipeline.reporting.provenance import dvc_data_version, git_commit

    first = members_of(bundle)[0]
    dataset = model_name.split("-", 1)[1] if "-" in model_name else model_name
    pixel = (first.get("metadata") or {}).get("pixel_size_um")
    return {
        "pixel_size_um": "unknown" if pixel is None else f"{float(pixel):g}",
        "data_version": dvc_data_version(root, dataset)
        or _dvc_file_hash(Path(root) / "data" / "01_raw" / f"{dataset}.dvc") or "unknown",
        "git_commit": git_commit(root),
        "input_convention": str(first.get("input_convention")),
    }


def _dvc_file_hash(path: Path) -> str | None:
    import yaml

    try:
        outs = (yaml.safe_load(path.read_text()) or {}).get("outs") or []
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    return next((o.get("md5") or o.get("hash") for o in outs if isinstance(o, dict)), None)


def _pip_requirements() -> list[str]:
    from importlib.metadata import version

    def pin(dist: str) -> str:
        return f"{dist}=={version(dist).split('+')[0]}"

    return [pin("torch"), pin("numpy"), pin("mlflow"), pin("opencv-python-headless")]


def log_model_bundle(bundle: dict[str, Any] | list, *, input_example_size: int = 64) -> Any:
    """Log a bundle (or a list of bundles: a fold ensemble) to the active MLflow run as a
    self-contained pyfunc model.

    The package's source travels with the model (``code_paths``), so loading it needs
    neither this project installed nor a Kedro session.

    Returns:
        MLflow's ``ModelInfo``.
    """
    import mlflow
    import torch

    import sa2_pipeline

    package_dir = Path(sa2_pipeline.__file__).parent

    rng = np.random.default_rng(0)
    example = rng.integers(0, 256, (input_example_size, input_example_size, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model_bundle.pt"
        torch.save(bundle, path)
        return mlflow.pyfunc.log_model(
            name="model",
            # Logged by path (MLflow "models from code"), not by pickling an object.
            python_model=str(package_dir / "tracking" / "pyfunc_model.py"),
            artifacts={"model_bundle": str(path)},
            code_paths=[str(package_dir)],
            signature=model_signature(),
            input_example=example,
            pip_requirements=_pip_requirements(),
        )


def register_and_promote(
    bundle: dict[str, Any] | list,
    *,
    model_name: str,
    test_scores: dict[str, float],
    test_set_id: str,
    metric: str = "test_dice",
    margin: float = 0.0,
    input_example_size: int = 64,
    score_champion: Callable[[str], float] | None = None,
) -> dict[str, Any]:
    """Log, register as ``challenger``, and promote to ``champion`` if it is better.

    Args:
        bundle: The trained model bundle, or a list of them (a fold ensemble).
        model_name: Registered model name, e.g. ``sa2net-synthetic``.
        test_scores: The candidate's test metrics (must contain ``metric``).
        test_set_id: Hash identifying the frozen test set the scores were computed on.
        metric: Higher-is-better metric compared by the gate.
        margin: The candidate must beat the champion by more than this.
        score_champion: ``score_champion(model_uri) -> metric`` re-scores the champion on
            this test set when its recorded score was computed on a different one; without
            it such a champion is kept (no fair comparison possible).

    Returns:
        A record of the registration: name, version, run, scores, decision, aliases.
    """
    import mlflow
    from mlflow import MlflowClient

    if metric not in test_scores:
        raise KeyError(f"promotion metric {metric!r} not in test scores {sorted(test_scores)}")
    from sa2_pipeline.models.bundle import bundle_digest, members_of

    candidate = float(test_scores[metric])
    client = MlflowClient()
    digest = bundle_digest(bundle)
    existing = _identical_version(client, model_name, digest, test_set_id)
    if existing is not None:
        return _unchanged_record(client, existing, model_name, test_set_id, digest, metric,
                                 candidate, margin)
    info = log_model_bundle(bundle, input_example_size=input_example_size)
    mv = mlflow.register_model(info.model_uri, model_name)
    version = str(mv.version)
    tags = {k: f"{v:.6f}" for k, v in test_scores.items()}
    members = members_of(bundle)
    tags.update(test_set_id=test_set_id, bundle_digest=digest,
                ensemble_size=str(len(members)), **usage_tags(bundle, model_name))
    set_version_tags(client, model_name, version, tags)
    client.set_registered_model_alias(model_name, CHALLENGER, version)

    decision = _gate(client, model_name, version, candidate, metric=metric, margin=margin,
                     test_set_id=test_set_id, score_champion=score_champion)
    aliases = [CHALLENGER] + ([CHAMPION] if decision.promote else [])
    return _record(model_name, version, info.model_uri, info.run_id, test_set_id, digest,
                   aliases, decision, unchanged=False)


def _gate(client: Any, model_name: str, version: str, candidate: float, *, metric: str,
          margin: float, test_set_id: str,
          score_champion: Callable[[str], float] | None) -> PromotionDecision:
    """Compare ``version`` with the champion, record the decision on it, and move the
    champion alias to it if it wins (the last write, so a crash never moves it)."""
    champion_version, champion_score = _champion_score(
        client, model_name, metric, test_set_id, score_champion
    )
    decision = decide_promotion(
        candidate, champion_score, metric=metric, margin=margin,
        champion_version=champion_version,
    )
    set_version_tags(client, model_name, version, {
        "promotion_decision": "promoted" if decision.promote else "rejected",
        "promotion_reason": decision.reason,
        **({} if champion_score is None else {"champion_score": f"{champion_score:.6f}"}),
    })
    if decision.promote:
        client.set_registered_model_alias(model_name, CHAMPION, version)
    logger.info("%s version %s: %s (%s)", model_name, version,
                "promoted to champion" if decision.promote else "kept as challenger",
                decision.reason)
    return decision


def set_version_tags(client: Any, model_name: str, version: str,
                     tags: dict[str, str]) -> None:
    """Tag a model version; every key gets the project's :data:`TAG_PREFIX`."""
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version, f"{TAG_PREFIX}{key}", value)


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

    ``run_tags`` are set on the run with :data:`TAG_PREFIX`; the version is tagged
    ``sa2.source = release`` and with its input convention.

    Returns:
        ``model_name``, ``version``, ``run_id`` and ``alias``.
    """
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=run_name) as run:
        mlflow.set_tags({f"{TAG_PREFIX}{k}": v for k, v in run_tags.items()})
        mlflow.log_params(params)
        info = log_model_bundle(bundle)
        version = str(mlflow.register_model(info.model_uri, model_name).version)
    client = MlflowClient()
    set_version_tags(client, model_name, version, {"source": "release",
                                                   **usage_tags(bundle, model_name)})
    client.set_registered_model_alias(model_name, alias, version)
    return {"model_name": model_name, "version": version, "run_id": run.info.run_id,
            "alias": alias}


def load_model(model_uri: str) -> Any:
    """A registered model as an MLflow pyfunc (``models:/<name>@<alias>``, a run URI...)."""
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(model_uri)


def _record(model_name: str, version: str, model_uri: str, run_id: str, test_set_id: str,
            digest: str, aliases: list[str], decision: PromotionDecision, *,
            unchanged: bool) -> dict[str, Any]:
    """The registration record ``register_and_promote`` returns (model_registration.json)."""
    return {
        "model_name": model_name,
        "version": version,
        "model_uri": model_uri,
        "run_id": run_id,
        "test_set_id": test_set_id,
        "bundle_digest": digest,
        "unchanged": unchanged,
        "aliases": aliases,
        **{f"decision_{k}": v for k, v in asdict(decision).items()},
    }


def _identical_version(client: Any, model_name: str, digest: str, test_set_id: str) -> Any:
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


def _unchanged_record(client: Any, existing: Any, model_name: str, test_set_id: str,
                      digest: str, metric: str, candidate: float,
                      margin: float) -> dict[str, Any]:
    """The registration record of a run whose model is already registered, unchanged."""
    from mlflow.exceptions import MlflowException

    version = str(existing.version)
    existing = client.get_model_version(model_name, version)  # searches may omit aliases
    try:
        champion_version = str(client.get_model_version_by_alias(model_name, CHAMPION).version)
    except MlflowException:
        champion_version = None
    aliases = sorted(getattr(existing, "aliases", None) or [])
    reason = (f"identical to version {version} (same weights and settings, same test set): "
              "not registered again")
    logger.info("%s: %s", model_name, reason)
    recorded = (existing.tags or {}).get(f"{TAG_PREFIX}champion_score")
    decision = PromotionDecision(False, reason, metric, candidate,
                                 None if recorded is None else float(recorded),
                                 champion_version, margin)
    return _record(model_name, version, f"models:/{model_name}/{version}", existing.run_id,
                   test_set_id, digest, aliases, decision, unchanged=True)


def _champion_score(
    client: Any,
    model_name: str,
    metric: str,
    test_set_id: str,
    score_champion: Callable[[str], float] | None,
) -> tuple[str | None, float | None]:
    from mlflow.exceptions import MlflowException

    try:
        champion = client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException:
        return None, None
    tags = champion.tags or {}
    recorded = tags.get(f"{TAG_PREFIX}{metric}")
    if recorded is not None and tags.get(f"{TAG_PREFIX}test_set_id") == test_set_id:
        return str(champion.version), float(recorded)
    if score_champion is None:
        logger.warning(
            "champion %s v%s was scored on another test set and cannot be re-scored here; "
            "it is kept", model_name, champion.version,
        )
        return str(champion.version), float("inf")
    score = float(score_champion(f"models:/{model_name}/{champion.version}"))
    logger.info("re-scored champion v%s on this test set: %s = %.4f", champion.version,
                metric, score)
    return str(champion.version), score
