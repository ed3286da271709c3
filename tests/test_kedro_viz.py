"""`kedro viz build` works offline on this project and its page renders the pipelines."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sa2_pipeline.reporting.browser import find_chromium, screenshot_kedro_viz

REPO_ROOT = Path(__file__).resolve().parents[1]
PIPELINES = {
    "__default__",
    "data_ingestion",
    "data_processing",
    "training",
    "evaluation",
    "reporting",
}

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("kedro_viz") is None, reason="kedro-viz is in the dev extra"
)


@pytest.fixture(scope="module")
def viz_build(tmp_path_factory) -> Path:
    """A copy of the project's configuration, built by the CLI as a user runs it."""
    project = tmp_path_factory.mktemp("project")
    shutil.copy(REPO_ROOT / "pyproject.toml", project / "pyproject.toml")
    shutil.copytree(REPO_ROOT / "conf", project / "conf", ignore=shutil.ignore_patterns("local"))
    (project / "conf" / "local").mkdir()
    (project / "src").mkdir()  # kedro checks it exists; the package is imported from ours
    env = {
        **os.environ,
        "KEDRO_DISABLE_TELEMETRY": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    kedro = [sys.executable, "-m", "kedro"]
    result = subprocess.run(
        [*kedro, "viz", "build"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return project / "build"


def test_build_holds_every_pipeline_and_node(viz_build):
    assert (viz_build / "index.html").is_file()
    main = json.loads((viz_build / "api" / "main").read_text())
    assert {p["id"] for p in main["pipelines"]} >= PIPELINES
    names = {n["name"] for n in main["nodes"]}
    assert {
        "ingest_raw_dataset",
        "fit_models",
        "evaluate_models",
        "build_report",
        "ingested_instances",
        "test_summary",
    } <= names


@pytest.mark.skipif(find_chromium() is None, reason="chromium not installed")
def test_built_page_renders(viz_build, tmp_path):
    from PIL import Image

    png = screenshot_kedro_viz(viz_build, tmp_path / "viz.png", width=1200, height=800)
    pixels = np.asarray(Image.open(png).convert("L"))
    assert pixels.std() > 5  # the dark canvas with the drawn graph, not a blank page
