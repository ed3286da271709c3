"""Opt-in (``-m airflow``): ``airflow dags test`` of a dataset's inference DAG on SQLite
against a tiny trained project copy: 2 mapped parts over 5 inputs, each input segmented
once, one run index of all 5."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from test_airflow_dags_test import _airflow

pytestmark = [pytest.mark.airflow,
              pytest.mark.filterwarnings("ignore::DeprecationWarning:mlflow")]


def test_airflow_inference_dag_maps_two_parts(make_project_copy, tmp_path):
    project = make_project_copy("airflow-inference-dag", tiny_config_in="local")
    project.kedro("run")  # trains and registers the champion
    slides = project.data("09_inference", "slides")
    slides.mkdir(parents=True)
    rng = np.random.default_rng(1)
    names = [f"tile-{i}.png" for i in range(5)]
    for name in names:
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(slides / name)
    home = tmp_path / "airflow-home"
    _airflow(project, home, "db", "migrate")
    out = _airflow(project, home, "dags", "test", "sa2_inference_synthetic", "2026-01-02",
                   "--conf", json.dumps({"num_parts": 2})).stdout
    indexes = list(project.data("09_inference", "results").glob("*/run_index.json"))
    assert len(indexes) == 1, out[-5000:]
    index = json.loads(indexes[0].read_text())
    assert sorted(index["inputs"]) == names
    records = list((indexes[0].parent / "records").glob("*.json"))
    assert sorted(json.loads(r.read_text())["name"] for r in records) == names  # once each
    assert "map_index=1" in out or "map_index: 1" in out or '"map_index": 1' in out, out[-3000:]
