"""dvc.yaml: one stage per Kedro pipeline and dataset, in step with the catalog; `dvc
repro` works; the data survives a push / delete / pull round trip through the remote."""

from __future__ import annotations

import hashlib
import importlib
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIR = REPO_ROOT / "src" / "sa2_pipeline"
# Environments that are not a dataset of their own: `paper` runs the paper's protocol on
# the synthetic data under the name synthetic-paper, so it cannot be a dvc_datasets entry.
_NOT_DATASETS = {"base", "local", "paper"}

# MLflow's SQL store triggers a SQLAlchemy deprecation warning of its own.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:mlflow")


# ---------------------------------------------------------------------------- dvc.yaml


def _datasets(root: Path = REPO_ROOT) -> list[str]:
    """The datasets dvc.yaml's stages are built for (dvc_datasets.yaml)."""
    return yaml.safe_load((root / "dvc_datasets.yaml").read_text())["datasets"]


def _dataset_environments() -> list[str]:
    """Every Kedro environment that stands for a dataset (conf/<name>/globals.yml)."""
    return sorted(
        p.parent.name for p in (REPO_ROOT / "conf").glob("*/globals.yml")
        if p.parent.name not in _NOT_DATASETS
    )


def _resolved_stages(
    root: Path, workdir: Path, datasets: list[str] | None = None
) -> dict[str, dict]:
    """dvc.yaml's stages as DVC resolves them (``<stage>@<dataset>``), read in ``workdir``.

    DVC itself expands the ``foreach`` (in a scratch repository, so nothing is written
    into ``root``), for ``root``'s dvc_datasets.yaml or for ``datasets``.
    """
    from dvc.repo import Repo

    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy(root / "dvc.yaml", workdir / "dvc.yaml")
    listed = _datasets(root) if datasets is None else datasets
    (workdir / "dvc_datasets.yaml").write_text(yaml.safe_dump({"datasets": listed}))
    if not (workdir / ".dvc").is_dir():
        Repo.init(str(workdir), no_scm=True).close()
    stages: dict[str, dict] = {}
    with Repo(str(workdir)) as repo:
        for stage in repo.index.stages:
            params = {
                dep.def_path: list(dep.params)
                for dep in stage.deps if type(dep).__name__ == "ParamsDependency"
            }
            stages[stage.name] = {
                "cmd": stage.cmd,
                "deps": [dep.def_path for dep in stage.deps
                         if type(dep).__name__ != "ParamsDependency"],
                "outs": [{out.def_path: {"persist": out.persist}} for out in stage.outs],
                "params": [{file: keys} for file, keys in params.items()],
            }
    return stages


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


def _catalog_config(dataset: str) -> dict[str, dict]:
    text = (REPO_ROOT / "conf" / "base" / "catalog.yml").read_text()
    return yaml.safe_load(text.replace("${globals:dataset}", dataset))


def _catalog_resolver(dataset: str):
    from kedro.io.catalog_config_resolver import CatalogConfigResolver

    return CatalogConfigResolver(
        _catalog_config(dataset),
        default_runtime_patterns={"{default}": {"type": "kedro.io.MemoryDataset"}},
    )


def _env_value(dataset: str, group: str, key: str) -> str:
    """``group.key`` as the environment conf/<dataset>/ sets it, else conf/base's value."""
    env = yaml.safe_load((REPO_ROOT / "conf" / dataset / "parameters.yml").read_text()) or {}
    base_file = REPO_ROOT / "conf" / "base" / f"parameters_{group}.yml"
    value = (env.get(group) or {}).get(key) or yaml.safe_load(base_file.read_text())[group][key]
    return value.replace("${globals:dataset}", dataset)


def _is_versioned(entry) -> bool:
    while isinstance(entry, dict):
        if entry.get("versioned"):
            return True
        entry = entry.get("dataset")
    return False


def _covered(path: str, declared: dict[str, dict]) -> list[str]:
    return [d for d in declared if path == d or path.startswith(d.rstrip("/") + "/")]


def _lookup(content: dict, dotted: str) -> bool:
    node = content
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def test_dvc_yaml_is_in_step_with_the_kedro_pipelines_and_catalog(tmp_path):
    from sa2_pipeline.pipeline_registry import STAGES

    declared = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    assert list(declared) == list(STAGES), "one DVC stage per Kedro pipeline, in run order"
    for name, stage in declared.items():
        assert stage.get("foreach") == "${datasets}" and set(stage) == {"foreach", "do"}, name
    datasets = _datasets()
    assert datasets[0] == "synthetic", "the embedded default comes first"
    stages = _resolved_stages(REPO_ROOT, tmp_path)
    assert set(stages) == {f"{name}@{dataset}" for name in STAGES for dataset in datasets}
    versioned = [n for n, entry in _catalog_config("x").items() if _is_versioned(entry)]
    assert not versioned, (
        f"Kedro versioning on DVC-tracked paths (docs/architecture.md): {versioned}"
    )
    for dataset in datasets:
        _check_dataset_stages(stages, dataset)


def test_every_dataset_environment_can_be_listed(tmp_path):
    """Appending any dataset environment to dvc_datasets.yaml gives correct stages."""
    environments = _dataset_environments()
    assert {"synthetic", "monuseg", "glas", "isic2018", "segpc2021", "acdc", "custom"} <= set(
        environments
    )
    for env in environments:
        globals_ = yaml.safe_load((REPO_ROOT / "conf" / env / "globals.yml").read_text())
        assert globals_["dataset"] == env, f"conf/{env}: dataset must be the environment name"
        assert (REPO_ROOT / "conf" / env / "parameters.yml").is_file(), f"conf/{env}"
    assert not set(_datasets()) & _NOT_DATASETS
    stages = _resolved_stages(REPO_ROOT, tmp_path, environments)
    owners: dict[str, str] = {}
    for name, stage in stages.items():
        for out in _entries(stage["outs"]):
            assert out not in owners, f"{out} is an out of {owners.get(out)} and {name}"
            owners[out] = name
    for env in environments:
        _check_dataset_stages(stages, env)


def _optional(name: str) -> bool:
    """Whether catalog entry ``name`` may be missing (loads as empty)."""
    entry = _catalog_config("x").get(name) or {}
    return str(entry.get("type", "")).endswith("OptionalJSONDataset")


def _check_dataset_stages(stages: dict[str, dict], dataset: str) -> None:
    """The stages of one dataset against its pipelines, catalog paths and parameters."""
    from sa2_pipeline.pipeline_registry import STAGES

    resolver = _catalog_resolver(dataset)
    base_params = {
        f"conf/base/{p.name}": yaml.safe_load(p.read_text())
        for p in (REPO_ROOT / "conf" / "base").glob("*.yml")
    }
    raw_dir = _env_value(dataset, "data_ingestion", "raw_dir")
    checkpoints = _env_value(dataset, "training", "checkpoint_dir")
    training_run = _catalog_path(resolver, "training_run")

    for name in STAGES:
        stage = stages[f"{name}@{dataset}"]
        assert stage["cmd"] == f"kedro run --pipelines {name} --env {dataset}"
        pipe = importlib.import_module(f"sa2_pipeline.pipelines.{name}.pipeline").create_pipeline()
        deps, outs, params = _entries(stage["deps"]), _entries(stage["outs"]), _params(stage)

        # Code: the pipeline folder (that the deps cover every project module it imports,
        # inside functions too, is tests/test_dvc_deps.py's check: one walk, not two).
        folder = PACKAGE_DIR / "pipelines" / name
        assert str(folder.relative_to(REPO_ROOT)) in deps
        for dep in deps:
            assert (REPO_ROOT / dep).exists() or dep.startswith("data/"), f"{name}: {dep}"
        assert "conf/base/catalog.yml" in deps

        # Data: the pipeline's free inputs in, everything it writes out.
        # An optional input (OptionalJSONDataset: the latest retraining record) cannot be a
        # DVC dep, which must exist; the retrain that writes it records the stage itself
        # (`dvc commit`, docs/retraining.md).
        optional = {ds for ds in pipe.inputs() if _optional(ds)}
        expected_deps = {_catalog_path(resolver, ds) for ds in pipe.inputs() - optional} - {None}
        if "trained_models" in pipe.inputs():  # ContinueModelRunHook reads training_run
            expected_deps.add(training_run)
        declared = {d for d in deps if d.startswith("data/")}
        assert declared == expected_deps, (
            f"stage {name}@{dataset}: data deps {sorted(declared)} but the pipeline reads "
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
            assert not _covered(checkpoints, {out: {}}), "checkpoints must survive dvc repro"

        # Parameters: every group the nodes read, the dataset name, and the dataset
        # environment's own parameters.yml as a whole (it may override any group).
        for file in params:
            assert (REPO_ROOT / file).is_file(), f"{name}: no params file {file}"
        assert params.get(f"conf/{dataset}/globals.yml") == ["dataset"]
        assert params.get(f"conf/{dataset}/parameters.yml") == [], "tracked whole"
        listed = {(f, k) for f, keys in params.items() if f.startswith("conf/base/") for k in keys}
        for file, key in listed:
            assert _lookup(base_params[file], key), f"{name}: {file} has no {key}"
        for ds in pipe.inputs():
            if ds.startswith("params:"):
                group = ds.removeprefix("params:")
                assert any(k == group or k.startswith(group + ".") for _, k in listed), (
                    f"stage {name} reads {ds} but tracks no {group} parameter"
                )


# ---------------------------------------------------------------------------- dvc repro


def _check_outs_exist(project, stage_names: set[str]) -> None:
    lock = yaml.safe_load((project.root / "dvc.lock").read_text())
    assert set(lock["stages"]) == stage_names
    for name, entry in lock["stages"].items():
        assert entry.get("outs"), f"{name} has no outs in dvc.lock"
        for out in entry["outs"]:
            path = project.root / out["path"]
            assert path.exists(), f"{name}: {out['path']} missing after dvc repro"
            if path.is_dir():
                assert any(path.iterdir()), f"{name}: {out['path']} is empty"


def _ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([\w@.-]+)'", output))


def _mlflow_runs(project):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=project.tracking_uri, registry_uri=project.tracking_uri)
    experiment = client.get_experiment_by_name(f"sa2-{project.dataset}")
    return client, client.search_runs([experiment.experiment_id])


@pytest.fixture(scope="module")
def dvc_project(make_project_copy, tmp_path_factory):
    """A project copy after its first `dvc repro`, with its default remote in a tmp folder.

    Returns ``(project, output of the first repro, remote folder)``.
    """
    # The tiny config goes into conf/base: DVC tracks the base parameter files.
    project = make_project_copy("dvc-repro", tiny_config_in="base")
    remote = tmp_path_factory.mktemp("dvc-remote")
    # --local: .dvc/config.local (git-ignored), so the tracked remote `local` stays as is.
    project.dvc("remote", "modify", "--local", "local", "url", str(remote))
    first = project.dvc("repro")
    return project, first.stdout, remote


def test_dvc_repro_reproduces_and_is_idempotent(dvc_project, tmp_path):
    project, first, _ = dvc_project
    stages = set(_resolved_stages(project.root, tmp_path))
    assert stages == {f"{name}@synthetic" for name in
                      ("data_ingestion", "data_processing", "training", "evaluation", "reporting")}

    assert _ran(first) == stages
    _check_outs_exist(project, stages)
    assert project.data("06_models", "checkpoints").is_dir(), "resume state kept, untracked"

    second = project.dvc("repro")
    assert not _ran(second.stdout), second.stdout
    for name in stages:
        assert f"Stage '{name}' didn't change, skipping" in second.stdout
    assert "Data and pipelines are up to date" in project.dvc("status").stdout

    # A training parameter changes: training and what follows re-run, ingestion does not.
    project.update_base_parameters({"training": {"epochs": 3}})
    status = project.dvc("status", "--json").stdout
    changed = json.loads(next(ln for ln in status.splitlines() if ln.startswith("{")))
    assert set(changed) == {"training@synthetic"}, changed
    third = project.dvc("repro")
    assert _ran(third.stdout) == {
        "training@synthetic", "evaluation@synthetic", "reporting@synthetic"
    }, third.stdout
    assert "Stage 'data_ingestion@synthetic' didn't change, skipping" in third.stdout
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


def _file_hashes(root: Path, paths: list[str]) -> dict[str, str]:
    """sha256 of every file under each of ``paths`` (files or folders), by relative path."""
    hashes = {}
    for rel in paths:
        top = root / rel
        for file in [top] if top.is_file() else sorted(top.rglob("*")):
            if file.is_file():
                hashes[file.relative_to(root).as_posix()] = hashlib.sha256(
                    file.read_bytes()
                ).hexdigest()
    return hashes


def test_dvc_push_remove_pull_round_trip(dvc_project):
    project, _, remote = dvc_project
    assert str(remote) in project.dvc("remote", "list").stdout, "tests never push elsewhere"
    assert "Data and pipelines are up to date" in project.dvc("status").stdout

    project.dvc("push")
    assert "in sync" in project.dvc("status", "--cloud").stdout
    assert any(p.is_file() for p in remote.rglob("*")), "nothing landed in the remote"

    lock = yaml.safe_load((project.root / "dvc.lock").read_text())
    outs = sorted({out["path"] for entry in lock["stages"].values() for out in entry["outs"]})
    raw = f"data/01_raw/{project.dataset}"
    assert raw in outs
    before = _file_hashes(project.root, outs)
    assert any(path.startswith(raw + "/") for path in before), "raw data not tracked"
    assert {Path(p).suffix for p in before} >= {".tif", ".xml", ".png", ".pt", ".html"}

    # Everything DVC manages goes: the stage outs (raw data included) and the local cache.
    for rel in outs:
        path = project.root / rel
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    shutil.rmtree(project.root / ".dvc" / "cache")
    assert not _file_hashes(project.root, [o for o in outs if (project.root / o).exists()])

    project.dvc("pull")
    assert _file_hashes(project.root, outs) == before, "pulled data differs from pushed"
    assert "Data and pipelines are up to date" in project.dvc("status").stdout
