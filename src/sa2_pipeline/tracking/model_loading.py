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

from sa2_pipeline.inference.predict import Predictor
from sa2_pipeline.models.bundle import load_bundle_file
from sa2_pipeline.tracking.model_versions import TAG_PREFIX, champion_version

__all__ = ["ResolvedModel", "champion_bundle_file", "load_predictor", "load_pyfunc",
           "resolve_model"]

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
    """The version's bundle (or fold ensemble) as a ``Predictor`` on ``device``."""
    import mlflow


    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model.uri))
    bundles = load_bundle_file(local / "artifacts" / "model_bundle.pt")
    return Predictor(bundles, device=device, **predictor_kwargs)


def load_pyfunc(model_uri: str) -> Any:
    """A registered model as an MLflow pyfunc (``models:/<name>@<alias>``,
    ``models:/<name>/<version>``, a run URI...)."""
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
