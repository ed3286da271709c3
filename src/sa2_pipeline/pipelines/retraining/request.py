"""The :class:`RetrainRequest` of a retrain, built from the project's Kedro configuration.

``sa2-pipeline retrain --env <dataset>`` runs outside a Kedro session; this module loads
``conf/base`` + ``conf/<env>`` (+ ``--params``) exactly as ``kedro run`` would, with the
project's config-loader settings, and builds the :class:`RetrainRequest`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from sa2_pipeline.config import IngestionConfig, RegistryConfig, RetrainingConfig, parse
from sa2_pipeline.config_files import config_file_error
from sa2_pipeline.datasets.registry import load_raw_dataset
from sa2_pipeline.user_errors import UserError


class RequestError(UserError, ValueError):
    """A bad ``--env`` or ``--params`` of a retrain command; the message says what is allowed."""


def parse_params_string(text: str) -> dict[str, Any]:
    """``"a.b=1,c=x"`` (Kedro's ``--params`` syntax) -> ``{"a": {"b": 1}, "c": "x"}``."""
    out: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in (text or "").split(","))):
        if "=" not in item:
            raise RequestError(f"--params item {item!r} is not key=value (Kedro's syntax: "
                               f"\"training.epochs=3,registry.register=true\")")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw.strip() else ""
        node = out
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def flatten_params(params: dict[str, Any], prefix: str = "") -> str:
    """The inverse of :func:`parse_params_string` for scalar leaves."""
    items = []
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            nested = flatten_params(value, f"{name}.")
            items.extend([nested] if nested else [])
        else:
            items.append(f"{name}={'' if value is None else value}")
    return ",".join(items)


def load_parameters(project_dir: Path, env: str, runtime_params: dict[str, Any] | None = None
                    ) -> dict[str, Any]:
    """Every parameter group of ``env``, merged as ``kedro run --env <env>`` merges them."""
    from kedro.config import OmegaConfigLoader

    from sa2_pipeline.settings import CONFIG_LOADER_ARGS

    conf = project_dir / "conf"
    # ``local`` is what a plain ``kedro run`` uses; ``base`` is under every environment.
    known = sorted(p.name for p in conf.iterdir()
                   if p.is_dir() and p.name != "base") if conf.is_dir() else []
    if env not in known:
        # A name, not a path: "..", "/etc" or "base/../x" never reach the config loader.
        raise RequestError(f"--env {env!r} is not an environment of {conf} "
                           f"(choose one of {known})")
    loader = OmegaConfigLoader(conf_source=str(project_dir / "conf"), env=env,
                               runtime_params=runtime_params or {}, **CONFIG_LOADER_ARGS)
    try:
        return dict(loader["parameters"])
    except yaml.YAMLError as err:  # a syntax error or a duplicate key: name file and line
        problem = config_file_error(conf, [env])
        if problem is None:
            raise
        raise problem from err


def build_request(project_dir: Path, env: str, *, params: str = "",
                  change_test_set: bool | None = None, detect_only: bool = False,
                  warm_start: bool | None = None):
    """The :class:`RetrainRequest` for ``env`` (CLI options override the parameters)."""
    from sa2_pipeline.retraining.orchestrate import RetrainRequest

    project_dir = Path(project_dir).resolve()
    parameters = load_parameters(project_dir, env, parse_params_string(params))
    ingestion = parse(IngestionConfig, parameters.get("data_ingestion"), "data_ingestion")
    cfg = parse(RetrainingConfig, parameters.get("retraining"), "retraining")
    registry = parse(RegistryConfig, parameters.get("registry"), "registry")
    raw_dir = ingestion.raw_dir

    def build_manifest():
        root = Path(raw_dir) if Path(raw_dir).is_absolute() else project_dir / raw_dir
        return load_raw_dataset(ingestion.format, root, dataset_name=ingestion.dataset,
                                max_side=ingestion.max_side).manifest

    def prepare_raw() -> None:
        from sa2_pipeline.datasets.synthetic import ensure_synthetic_monuseg

        synthetic = ingestion.synthetic
        if synthetic is not None and synthetic.generate_if_missing:
            root = Path(raw_dir) if Path(raw_dir).is_absolute() else project_dir / raw_dir
            ensure_synthetic_monuseg(root, n_train=synthetic.n_train, n_test=synthetic.n_test,
                                     image_size=synthetic.image_size, seed=synthetic.seed)

    return RetrainRequest(
        project_dir=project_dir, env=env, dataset=ingestion.dataset, raw_dir=raw_dir,
        build_manifest=build_manifest, prepare_raw=prepare_raw, min_new_images=cfg.min_new_images,
        change_test_set=cfg.change_test_set if change_test_set is None else change_test_set,
        params=params, detect_only=detect_only, model_name=registry.model_name,
        register=registry.register,
        warm_start=cfg.warm_start if warm_start is None else warm_start,
    )
