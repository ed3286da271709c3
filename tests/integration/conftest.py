"""Integration fixtures: throw-away copies of the project, run with a tiny configuration.

A copy holds what git would hand a new user (tracked files plus untracked, non-ignored
ones: never .venv, data contents, mlflow.db or the DVC cache/remote), its own git repo (DVC
needs one) and its own MLflow store (``sqlite:///<copy>/mlflow.db``). Commands run in the
copy with this interpreter's venv on PATH and the copy's ``src`` first on PYTHONPATH, so
they test the copy's code, never the installed checkout's.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
# Not resolved: the venv's python is a symlink to the base interpreter.
VENV_BIN = Path(sys.executable).parent
DATASET = "synthetic"

# Small enough for ~10 s of work per `kedro run` on 2 CPU cores (the rest is imports).
TINY_PARAMETERS: dict[str, Any] = {
    "data_ingestion": {"synthetic": {"n_train": 6, "n_test": 2, "image_size": 64}},
    "data_processing": {"n_folds": 3},
    "model": {"base_channels": 4},
    # A list: replaced whole by any override (no soft merge inside lists).
    "baselines": [
        {"name": "unet", "in_channels": 3, "num_classes": 1, "base_channels": 4,
         "deep_supervision": False},
    ],
    "training": {
        "epochs": 2,
        "batch_size": 2,
        "patch_size": 32,
        "samples_per_epoch": 4,
        "num_threads": 1,
    },
    "evaluation": {"patch_size": 64},
    "reporting": {"n_overlays": 2},
}

_NOT_COPIED_TOP = {".git", ".venv", ".dvc-storage", "mlruns", "mlartifacts"}
# dvc.lock records the default configuration's hashes; a copy makes its own.
_NOT_COPIED_FILES = {"mlflow.db", "dvc.lock"}


@dataclass
class ProjectCopy:
    """A copy of the project in a temporary folder, and how to run commands in it."""

    root: Path
    env: dict[str, str] = field(repr=False)
    dataset: str = DATASET
    tiny: dict[str, Any] = field(default_factory=lambda: copy.deepcopy(TINY_PARAMETERS))

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.root / 'mlflow.db'}"

    def data(self, layer: str, *parts: str) -> Path:
        """``data/<layer>/<dataset>/<parts...>`` in the copy."""
        return self.root / "data" / layer / self.dataset / Path(*parts)

    def run(
        self,
        *args: str,
        timeout: float = 600,
        check: bool = True,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command (stdout and stderr together); fail the test with its output."""
        try:
            proc = subprocess.run(
                list(args), cwd=cwd or self.root, env=env or self.env, timeout=timeout,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False,
            )
        except subprocess.TimeoutExpired as err:
            out = err.stdout.decode() if isinstance(err.stdout, bytes) else err.stdout or ""
            pytest.fail(f"`{' '.join(args)}` timed out after {timeout} s\n{out[-6000:]}")
        if check and proc.returncode != 0:
            pytest.fail(
                f"`{' '.join(args)}` exited with {proc.returncode} in {cwd or self.root}\n"
                f"--- output (tail) ---\n{proc.stdout[-8000:]}"
            )
        return proc

    def kedro(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return self.run(str(VENV_BIN / "kedro"), *args, timeout=timeout)

    def dvc(self, *args: str, timeout: float = 600, check: bool = True):
        return self.run(str(VENV_BIN / "dvc"), *args, timeout=timeout, check=check)

    def update_env_parameters(self, env: str, overrides: dict[str, Any]) -> None:
        """Deep-merge ``overrides`` into the copy's ``conf/<env>/parameters.yml``."""
        path = self.root / "conf" / env / "parameters.yml"
        content = yaml.safe_load(path.read_text()) if path.is_file() else None
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(_deep_merge(content or {}, overrides), sort_keys=False))

    def update_base_parameters(self, overrides: dict[str, Any]) -> None:
        """Deep-merge ``overrides`` into the copy's ``conf/base/parameters*.yml``.

        Each top-level key goes into the file that defines it, so DVC (which tracks the
        base files) and Kedro see the same values.
        """
        remaining = dict(overrides)
        for path in sorted((self.root / "conf" / "base").glob("parameters*.yml")):
            content = yaml.safe_load(path.read_text()) or {}
            touched = False
            for key in list(remaining):
                if key in content:
                    content[key] = _deep_merge(content[key], remaining.pop(key))
                    touched = True
            if touched:
                path.write_text(yaml.safe_dump(content, sort_keys=False))
        assert not remaining, f"parameter groups not found in conf/base: {sorted(remaining)}"

    def git_commit(self, message: str) -> None:
        self.run("git", "add", "-A")
        self.run(*_GIT, "commit", "-q", "--no-verify", "-m", message)


_GIT = (
    "git",
    "-c", "user.name=sa2-pipeline tests",
    "-c", "user.email=tests@sa2-pipeline.invalid",
    "-c", "commit.gpgsign=false",
)


def _deep_merge(base: Any, override: Any) -> Any:
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = _deep_merge(base.get(key), value)
        return merged
    return copy.deepcopy(override)


def _wanted(relpath: str) -> bool:
    parts = PurePosixPath(relpath).parts
    if parts[0] in _NOT_COPIED_TOP or relpath in _NOT_COPIED_FILES:
        return False
    if parts[0] == "data" or parts[:2] == ("conf", "local"):
        return parts[-1] in (".gitkeep", ".gitignore")  # the layout, never the content
    return parts[:2] not in ((".dvc", "cache"), (".dvc", "tmp"))


def _project_files() -> list[str]:
    """What a clone of the working tree would hold: tracked + untracked, not ignored."""
    proc = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO_ROOT, capture_output=True, check=False,
    )
    if proc.returncode != 0:
        pytest.skip(f"{REPO_ROOT} is not a git working tree: {proc.stderr.decode()[:200]}")
    return [p for p in proc.stdout.decode().split("\0") if p and _wanted(p)]


def _base_env(root: Path) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("MLFLOW_", "KEDRO_", "DVC_", "GIT_"))
        and k not in ("PYTHONPATH", "VIRTUAL_ENV")
    }
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        PYTHONPATH=str(root / "src"),
        MLFLOW_TRACKING_URI=f"sqlite:///{root / 'mlflow.db'}",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        KEDRO_DISABLE_TELEMETRY="1",
        NO_ALBUMENTATIONS_UPDATE="1",
        MPLBACKEND="Agg",
        COLUMNS="160",  # rich logging: readable output tails on failure
    )
    return env


@pytest.fixture(scope="session")
def make_project_copy(tmp_path_factory):
    """Factory: ``make_project_copy(name, tiny_config_in="local" | "base" | None)``.

    ``"local"`` writes the tiny configuration to ``conf/local/parameters.yml`` (soft-merged
    over base by Kedro); ``"base"`` writes it into ``conf/base`` so DVC tracks it too;
    None writes none (the test configures the copy itself).
    """
    if shutil.which("git") is None:
        pytest.skip("git is needed to copy the project (and by DVC)")
    for tool in ("kedro", "dvc"):
        if not (VENV_BIN / tool).exists():
            pytest.skip(f"{tool} not installed next to {sys.executable}")
    files = _project_files()

    def make(name: str, *, tiny_config_in: str | None) -> ProjectCopy:
        root = tmp_path_factory.mktemp(name) / "sa2-pipeline"
        for rel in files:
            src = REPO_ROOT / rel
            if not src.exists() and not src.is_symlink():
                continue  # deleted in the working tree, not yet in the index
            dst = root / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst, follow_symlinks=False)
        project = ProjectCopy(root=root, env=_base_env(root))
        if tiny_config_in == "local":
            (root / "conf" / "local").mkdir(parents=True, exist_ok=True)
            (root / "conf" / "local" / "parameters.yml").write_text(
                yaml.safe_dump(TINY_PARAMETERS, sort_keys=False)
            )
        elif tiny_config_in == "base":
            project.update_base_parameters(TINY_PARAMETERS)
        elif tiny_config_in is not None:
            raise ValueError(
                f"tiny_config_in must be 'local', 'base' or None, not {tiny_config_in!r}"
            )
        project.run("git", "init", "-q")
        project.git_commit("copy of the project under test")
        return project

    return make


@pytest.fixture(scope="session")
def kedro_project(make_project_copy) -> ProjectCopy:
    """A project copy (tiny config in conf/local) after one successful ``kedro run``."""
    project = make_project_copy("kedro-run", tiny_config_in="local")
    project.kedro("run")
    return project
