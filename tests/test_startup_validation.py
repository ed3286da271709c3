"""Every parameter group is checked once when a run starts, before any node runs.

The subprocess tests go through ``kedro run`` in a throw-away copy of the project's
``conf`` (and ``pyproject.toml``) whose code is this checkout's ``src``; nothing there
exists before the run, so any file it leaves would show that a node ran.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kedro_project import kedro_run, make_project_copy
from sa2_pipeline.config import ConfigError, validate_parameters

ROOT = Path(__file__).resolve().parents[1]
ENVIRONMENTS = sorted(p.name for p in (ROOT / "conf").iterdir()
                      if p.is_dir() and p.name not in ("base", "local"))


def _parameters(env: str | None) -> dict:
    from kedro.config import OmegaConfigLoader

    from sa2_pipeline.settings import CONFIG_LOADER_ARGS

    loader = OmegaConfigLoader(str(ROOT / "conf"), env=env or "base",
                               **{k: v for k, v in CONFIG_LOADER_ARGS.items()})
    return loader["parameters"]


@pytest.mark.parametrize("env", [None, *ENVIRONMENTS])
def test_every_shipped_environment_validates(env: str | None) -> None:
    validate_parameters(_parameters(env))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"trainin": {"epochs": 1000}}, r"unknown parameter group\(s\) \['trainin'\]"),
        ({"evaluation": {"overlap": 1.5}}, r"evaluation\.overlap must be in \[0, 1\), got 1\.5"),
        ({"registry": {"promotion_margn": 0.1}}, r"\['promotion_margn'\] in registry"),
        ({"reporting": {"n_overlay": 3}}, r"\['n_overlay'\] in reporting"),
        ({"reporting": {"n_overlays": -1}}, r"reporting\.n_overlays must be >= 0"),
        ({"model": {"name": "sa2nett"}}, r"model\.name = 'sa2nett' is not a model"),
        ({"baselines": "unet"}, r"baselines must be a list"),
        ({"evaluation": {"threshold": 2}}, r"evaluation\.threshold must be in \[0, 1\]"),
    ],
)
def test_a_bad_value_anywhere_is_named(override: dict, message: str) -> None:
    params = _parameters(None)
    for group, value in override.items():
        params[group] = {**params[group], **value} if isinstance(value, dict) and isinstance(
            params.get(group), dict) else value
    with pytest.raises(ConfigError, match=message):
        validate_parameters(params)


def test_every_problem_is_listed_at_once() -> None:
    params = {**_parameters(None), "trainin": {"epochs": 1}}
    params["evaluation"] = {**params["evaluation"], "overlap": 1.5}
    with pytest.raises(ConfigError) as caught:
        validate_parameters(params)
    assert "trainin" in str(caught.value) and "evaluation.overlap" in str(caught.value)


@pytest.fixture(scope="module")
def project_copy(tmp_path_factory) -> Path:
    return make_project_copy(tmp_path_factory.mktemp("project"))


def _created(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name not in ("conf", "src",
                                                                    "pyproject.toml"))


def test_kedro_run_with_bad_params_fails_before_any_node(project_copy: Path) -> None:
    result = kedro_run(project_copy, "--params",
                        "trainin.epochs=1000,evaluation.overlap=1.5,registry.promotion_margn=1")
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "unknown parameter group(s) ['trainin']" in out
    assert "evaluation.overlap must be in [0, 1), got 1.5" in out
    assert "['promotion_margn'] in registry" in out
    assert "Running node" not in out
    assert "Traceback" not in out, "a user error must print its message, not the stack"
    assert _created(project_copy) == [], "the run wrote something before failing"
    # kedro-mlflow's model class is imported by every kedro command; MLflow's warning
    # about it is dropped by the project's kedro.init hook (sa2_pipeline.kedro_init).
    assert "Add type hints" not in out


def test_kedro_run_with_a_missing_environment_names_it(project_copy: Path) -> None:
    result = kedro_run(project_copy, "--env", "doesnotexist")
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "environment 'doesnotexist' not found" in out
    assert "synthetic" in out  # lists the environments there are
    assert "Running node" not in out
    assert _created(project_copy) == []
