"""dvc.yaml: one stage per Kedro pipeline, in step with the catalog; `dvc repro` works."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIR = REPO_ROOT / "src" / "sa2_pipeline"
_IMPORT = re.compile(r"^\s*(?:from|import)\s+(sa2_pipeline(?:\.\w+)+)", re.MULTILINE)

# MLflow's SQL store triggers a SQLAlchemy deprecation warning of its own.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:mlflow")


# ---------------------------------------------------------------------------- dvc.yaml


def _dataset() -> str:
    return yaml.safe_load((REPO_ROOT / "conf" / "base" / "globals.yml").read_text())["dataset"]


def _stages(root: Path = REPO_ROOT) -> dict[str, dict]:
    """dvc.yaml's stages with ``${dataset}`` (its only variable) resolved."""
    text = (root / "dvc.yaml").read_text().replace("${dataset}", _dataset())
    return yaml.safe_load(text)["stages"]


def _entries(items: list) -> dict[str, dict]:
    """deps/outs list -> {path: options}."""
    out = {}
    for item in items or []:
        if isinstance(item, str):
            out[item] = {}
        else:
            ((path, options),) = item.items()
            out[path] = options or {}
    return out


def _params(stage: dict) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in stage.get("params", []):
        assert isinstance(item, dict), f"param {item!r} would be read from params.yaml"
        for file, keys in item.items():
            out.setdefault(file, []).extend(keys)
    return out


def _catalog_path(resolver, name: str) -> str | None:
    """The file or folder a catalog entry reads/writes (None for memory/MLflow-only)."""
    config = resolver.resolve_pattern(name)
    while isinstance(config, dict):
        path = config.get("filepath") or config.get("path")
        if path:
            return str(path)
        config = config.get("dataset")
    return None


def _catalog_config() -> dict[str, dict]:
    text = (REPO_ROOT / "conf" / "base" / "catalog.yml").read_text()
    return yaml.safe_load(text.replace("${globals:dataset}", _dataset()))


def _catalog_resolver():
    from kedro.io.catalog_config_resolver import CatalogConfigResolver

    return CatalogConfigResolver(
        _catalog_config(),
        default_runtime_patterns={"{default}": {"type": "kedro.io.MemoryDataset"}},
    )


def _is_versioned(entry) -> bool:
    while isinstance(entry, dict):
        if entry.get("versioned"):
            return True
        entry = entry.get("dataset")
    return False


def _module_file(module: str) -> Path | None:
    rel = Path(*module.split(".")[1:])
    for candidate in (PACKAGE_DIR / f"{rel}.py", PACKAGE_DIR / rel / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_files(folder: Path) -> set[Path]:
    """Every project module the pipeline folder imports, directly or not (static imports)."""
    seen: set[Path] = set()
    todo = list(folder.glob("*.py"))
    while todo:
        file = todo.pop()
        if file in seen:
            continue
        seen.add(file)
        for module in _IMPORT.findall(file.read_text()):
            parts = module.split(".")
            while len(parts) > 1 and _module_file(".".join(parts)) is None:
                parts.pop()  # `from sa2_pipeline.x import name`: name is not a module
            target = _module_file(".".join(parts))
            if target is not None:
                todo.append(target)
    return seen


def _covered(path: str, declared: dict[str, dict]) -> list[str]:
    return [d for d in declared if path == d or path.startswith(d.rstrip("/") + "/")]


def _lookup(content: dict, dotted: str) -> bool:
    node = content
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def test_dvc_yaml_is_in_step_with_the_kedro_pipelines_and_catalog():
    from sa2_pipeline.pipeline_registry import STAGES

    stages = _stages()
    assert list(stages) == list(STAGES), "one DVC stage per Kedro pipeline, in run order"
    resolver = _catalog_resolver()
    versioned = [name for name, entry in _catalog_config().items() if _is_versioned(entry)]
    assert not versioned, f"Kedro versioning on DVC-tracked paths (DESIGN.md): {versioned}"
    base_params = {
        f"conf/base/{p.name}": yaml.safe_load(p.read_text())
        for p in (REPO_ROOT / "conf" / "base").glob("*.yml")
    }
    ingestion = base_params["conf/base/parameters_data_ingestion.yml"]["data_ingestion"]
    training = base_params["conf/base/parameters_training.yml"]["training"]
    dataset = _dataset()
    raw_dir = ingestion["raw_dir"].replace("${globals:dataset}", dataset)
    checkpoints = training["checkpoint_dir"].replace("${globals:dataset}", dataset)
    training_run = _catalog_path(resolver, "training_run")
    all_outs: dict[str, str] = {}

    for name, stage in stages.items():
        assert stage["cmd"] == f"kedro run --pipeline {name}"
        pipe = importlib.import_module(f"sa2_pipeline.pipelines.{name}.pipeline").create_pipeline()
        deps, outs, params = _entries(stage["deps"]), _entries(stage["outs"]), _params(stage)

        # Code: the pipeline folder and every project module it imports.
        folder = PACKAGE_DIR / "pipelines" / name
        assert str(folder.relative_to(REPO_ROOT)) in deps
        for dep in deps:
            assert (REPO_ROOT / dep).exists() or dep.startswith("data/"), f"{name}: {dep}"
        uncovered = sorted(
            str(f.relative_to(REPO_ROOT)) for f in _imported_files(folder)
            if not _covered(str(f.relative_to(REPO_ROOT)), deps)
        )
        assert not uncovered, f"stage {name} runs code it does not depend on: {uncovered}"
        assert "conf/base/catalog.yml" in deps

        # Data: the pipeline's free inputs in, everything it writes out.
        expected_deps = {_catalog_path(resolver, ds) for ds in pipe.inputs()} - {None}
        if "trained_models" in pipe.inputs():  # ContinueModelRunHook reads training_run
            expected_deps.add(training_run)
        declared = {d for d in deps if d.startswith("data/")}
        assert declared == expected_deps, (
            f"stage {name}: data deps {sorted(declared)} but the pipeline reads "
            f"{sorted(expected_deps)}"
        )
        written = {_catalog_path(resolver, ds) for ds in pipe.all_outputs()} - {None}
        if name == "data_ingestion":
            written.add(raw_dir)
            assert outs[raw_dir].get("persist") is True, "never delete a user's raw data"
        for path in written:
            assert len(_covered(path, outs)) == 1, f"{name}: {path} is not exactly one out"
        for out in outs:
            assert any(_covered(p, {out: {}}) for p in written), f"{name}: stray out {out}"
            assert out not in all_outs, f"{out} is an out of {all_outs.get(out)} and {name}"
            all_outs[out] = name
            assert not _covered(checkpoints, {out: {}}), "checkpoints must survive dvc repro"

        # Parameters: every group the nodes read, plus the dataset name.
        assert "dataset" in params.get("conf/base/globals.yml", [])
        listed = {(f, k) for f, keys in params.items() for k in keys}
        for file, key in listed:
            assert _lookup(base_params[file], key), f"{name}: {file} has no {key}"
        for ds in pipe.inputs():
            if ds.startswith("params:"):
                group = ds.removeprefix("params:")
                assert any(k == group or k.startswith(group + ".") for _, k in listed), (
                    f"stage {name} reads {ds} but tracks no {group} parameter"
                )


# ---------------------------------------------------------------------------- dvc repro


def _check_outs_exist(project) -> None:
    lock = yaml.safe_load((project.root / "dvc.lock").read_text())
    assert set(lock["stages"]) == set(_stages(project.root))
    for name, entry in lock["stages"].items():
        assert entry.get("outs"), f"{name} has no outs in dvc.lock"
        for out in entry["outs"]:
            path = project.root / out["path"]
            assert path.exists(), f"{name}: {out['path']} missing after dvc repro"
            if path.is_dir():
                assert any(path.iterdir()), f"{name}: {out['path']} is empty"


def _ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '(\w+)'", output))


def _mlflow_runs(project):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=project.tracking_uri, registry_uri=project.tracking_uri)
    experiment = client.get_experiment_by_name(f"sa2-{project.dataset}")
    return client, client.search_runs([experiment.experiment_id])


def test_dvc_repro_reproduces_and_is_idempotent(make_project_copy):
    # The tiny config goes into conf/base: DVC tracks the base parameter files.
    project = make_project_copy("dvc-repro", tiny_config_in="base")
    stages = list(_stages(project.root))

    first = project.dvc("repro")
    assert _ran(first.stdout) == set(stages)
    _check_outs_exist(project)
    assert project.data("06_models", "checkpoints").is_dir(), "resume state kept, untracked"

    second = project.dvc("repro")
    assert not _ran(second.stdout), second.stdout
    for name in stages:
        assert f"Stage '{name}' didn't change, skipping" in second.stdout
    assert "Data and pipelines are up to date" in project.dvc("status").stdout

    # The data lands in the configured (local) remote.
    project.dvc("push")
    assert "in sync" in project.dvc("status", "--cloud").stdout

    # A training parameter changes: training and what follows re-run, ingestion does not.
    project.update_base_parameters({"training": {"epochs": 3}})
    status = project.dvc("status", "--json").stdout
    changed = json.loads(next(ln for ln in status.splitlines() if ln.startswith("{")))
    assert set(changed) == {"training"}, changed
    third = project.dvc("repro")
    assert _ran(third.stdout) == {"training", "evaluation", "reporting"}, third.stdout
    assert "Stage 'data_ingestion' didn't change, skipping" in third.stdout
    history = pd.read_csv(project.data("06_models", "training_history.csv"))
    assert set(history.groupby(["model", "fold"]).size()) == {3}, "3 epochs per run"
    assert "Data and pipelines are up to date" in project.dvc("status").stdout

    # Stage by stage is still one MLflow run per training: evaluation and reporting
    # continue the run of the training that produced the models they read.
    client, runs = _mlflow_runs(project)
    assert len(runs) == 2
    for run in runs:
        per_epoch = [k for k in run.data.metrics if k.rsplit("/", 1)[-1] == "val_dice"]
        assert per_epoch and client.get_metric_history(run.info.run_id, per_epoch[0])
        assert any(key.endswith("test_dice") for key in run.data.metrics)
        assert "report.html" in {a.path for a in client.list_artifacts(run.info.run_id)}
