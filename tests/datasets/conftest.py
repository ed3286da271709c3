"""Fixtures for the raw-dataset tests: one small synthetic MoNuSeg, copied per test."""

import shutil
from pathlib import Path

import pytest

from sa2_pipeline.datasets.synthetic import generate_synthetic_monuseg

N_TRAIN = 3
N_TEST = 2
TILE = 64


@pytest.fixture(scope="session")
def synthetic_root_readonly(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated 64x64 dataset shared by the session; never modify it."""
    root = tmp_path_factory.mktemp("synthetic") / "monuseg"
    generate_synthetic_monuseg(root, n_train=N_TRAIN, n_test=N_TEST, image_size=TILE, seed=7)
    return root


@pytest.fixture
def synthetic_root(synthetic_root_readonly: Path, tmp_path: Path) -> Path:
    """A private copy of the generated dataset that a test may damage."""
    root = tmp_path / "monuseg"
    shutil.copytree(synthetic_root_readonly, root)
    return root
