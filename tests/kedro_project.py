"""A bare Kedro project (the checkout's conf/ and pyproject) to run `kedro run` in, for
tests of start-up errors: nothing in it but what Kedro needs to start."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_project_copy(root: Path) -> Path:
    """``conf/`` (without the machine's ``local/``), ``pyproject.toml`` and an empty ``src/``
    at ``root``; the code comes from the checkout through ``PYTHONPATH``."""
    shutil.copytree(ROOT / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir()
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    (root / "src").mkdir()
    return root


def kedro_run(root: Path, *args: str) -> subprocess.CompletedProcess:
    """``kedro run ARGS`` in ``root`` with its own MLflow store; output captured."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "KEDRO_DISABLE_TELEMETRY": "1",
           "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db"}
    env.pop("SA2_VERBOSE", None)
    kedro = Path(sys.executable).parent / "kedro"
    return subprocess.run([str(kedro), "run", *args], cwd=root, env=env, capture_output=True,
                          text=True, timeout=600, check=False)
