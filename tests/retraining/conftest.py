"""Shared fixtures of the retraining tests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sa2_pipeline.retraining import orchestrate

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def offline_project(tmp_path, monkeypatch):
    """Factory of a project whose ``conf/`` is the checkout's, in a temporary folder, and
    whose ``synthetic`` environment makes tiny slides. The retrain's DVC step and its
    ``kedro run`` raise if reached: these tests stop (or fake them) before."""

    def make(n_train: int = 2, n_test: int = 1, image_size: int = 64,
             message: str = "this retrain must stop before") -> Path:
        root = tmp_path / "project"
        shutil.copytree(ROOT / "conf", root / "conf")
        sizes = {"n_train": n_train, "n_test": n_test, "image_size": image_size}
        (root / "conf" / "synthetic" / "parameters.yml").write_text(
            json.dumps({"data_ingestion": {"synthetic": sizes}}))

        def must_not_run(*args, **kwargs):
            raise AssertionError(f"{message} {args!r}")

        monkeypatch.setattr(orchestrate, "version_raw_data", must_not_run)
        monkeypatch.setattr(orchestrate, "run_command", must_not_run)
        return root

    return make
