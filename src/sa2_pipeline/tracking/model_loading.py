"""Load registered models: resolve one to a concrete version, load it for inference, as a
pyfunc, or fetch the champion's bundle file.

``models:/<name>@<alias>`` is resolved once, at the start of a run, to
``models:/<name>/<version>``: everything after that loads that version, so an alias that
moves while a long run is going changes nothing in it. The model's bundle is read from the
version's artifacts (``model_bundle.pt``) and wrapped in a
:class:`~sa2_pipeline.inference.predict.Predictor`, which the slide pipeline streams tiles
through; the version's tags (training pixel size, input convention...) come with it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sa2_pipeline.inference.engines import engine_predictor
from sa2_pipeline.inference.onnx_export import EXPORT_FOLDER, member_files
from sa2_pipeline.models.bundle import load_bundle_file, members_of
from sa2_pipeline.tracking.mlflow_run import active_run_id
from sa2_pipeline.tracking.model_versions import TAG_PREFIX, champion_version

__all__ = ["ResolvedModel", "champion_bundle_file", "load_predictor", "load_pyfunc",
           "log_engine_choice", "resolve_model", "version_exports"]

_ALIAS_URI = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/]+)$")
_VERSION_URI = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)$")


@dataclass(frozen=True)
class ResolvedModel:
    """One concrete registered model version."""

    name: str
    version: str
    requested_uri: str
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    @property
    def label(self) -> str:
        """Folder name for this version's outputs: ``<name>-v<version>``."""
        return f"{self.name}-v{self.version}"

    @property
    def pixel_size_um(self) -> float | None:
        value = self.tags.get(f"{TAG_PREFIX}pixel_size_um")
        try:
            return float(value) if value not in (None, "", "unknown") else None
        except ValueError:
            return None

    def as_record(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "uri": self.uri,
                "requested_uri": self.requested_uri}


def resolve_model(uri: str) -> ResolvedModel:
    """``models:/name@alias`` or ``models:/name/version`` -> the concrete version.

    Raises:
        ValueError: Not a registry URI, or the alias / version does not exist.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    alias_match, version_match = _ALIAS_URI.match(uri), _VERSION_URI.match(uri)
    try:
        if alias_match:
            mv = client.get_model_version_by_alias(alias_match["name"], alias_match["alias"])
        elif version_match:
            mv = client.get_model_version(version_match["name"], version_match["version"])
        else:
            raise ValueError(f"model {uri!r}: expected models:/<name>@<alias> or "
                             "models:/<name>/<version>")
    except MlflowException as err:
        raise ValueError(f"model {uri!r} not found in the registry: {err.message}") from err
    return ResolvedModel(name=mv.name, version=str(mv.version), requested_uri=uri,
                         tags=dict(mv.tags or {}))


def load_predictor(model: ResolvedModel, *, device: Any = None, **predictor_kwargs: Any):
    """The version's bundle (or fold ensemble) as a ``Predictor`` on ``device``; with
    ``engine=...`` it runs the version's checked ONNX export (none: eager, with a message)."""
    import mlflow


    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model.uri))
    bundles = load_bundle_file(local / "artifacts" / "model_bundle.pt")
    return engine_predictor(bundles, device=device,
                            onnx_files=version_exports(local / "artifacts", bundles),
                            **predictor_kwargs)


def version_exports(artifacts: str | Path, bundles: Any) -> list[Path] | None:
    """The ONNX exports of a logged model's artifacts folder (one per member); None for a
    version registered without one (older, or its export failed the parity check)."""
    return member_files(Path(artifacts) / EXPORT_FOLDER, len(members_of(bundles)))


def log_engine_choice(choice: dict[str, Any] | None) -> None:
    """Record the engine a run used (:class:`~sa2_pipeline.inference.engines.EngineChoice`
    as a record) on the active MLflow run, if there is one: tags ``sa2.engine``,
    ``sa2.engine_precision``, ``sa2.engine_batch_size``, ``sa2.engine_requested`` and the
    whole choice (with ``auto``'s measurements) as ``engine_choice.json``."""
    run_id = active_run_id()
    if not choice or run_id is None:
        return
    from mlflow import MlflowClient

    client = MlflowClient()
    for key, value in (("engine", choice["engine"]), ("engine_precision", choice["precision"]),
                       ("engine_batch_size", choice["batch_size"]),
                       ("engine_requested", choice["requested"])):
        client.set_tag(run_id, f"{TAG_PREFIX}{key}", str(value))
    client.log_dict(run_id, choice, "engine_choice.json")


def load_pyfunc(model_uri: str, engine: str | None = None) -> Any:
    """A registered model as an MLflow pyfunc (``models:/<name>@<alias>``,
    ``models:/<name>/<version>``, a run URI...); ``engine``: its load-time engine (None:
    the model's default, ``inference.engine``)."""
    import mlflow.pyfunc

    if engine is None:
        return mlflow.pyfunc.load_model(model_uri)
    return mlflow.pyfunc.load_model(model_uri, model_config={"engine": engine})


def champion_bundle_file(model_name: str, folder: str | Path) -> Path | None:
    """Download the champion's ``model_bundle.pt`` to ``folder/<name>-v<version>.pt``.

    Returns:
        The file, or None when ``model_name`` has no champion yet.
    """
    import shutil
    import tempfile

    import mlflow
    from mlflow import MlflowClient

    version = champion_version(MlflowClient(), model_name)
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
