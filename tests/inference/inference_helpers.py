"""Helpers of the inference tests: a throwaway MLflow store with one tiny registered model
(alias ``champion``), H&E-like test images, the commands a user types run against it."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from kedro_project import make_project_copy

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@dataclass
class TinyModel:
    name: str
    tracking_uri: str
    root: Path

    @property
    def uri(self) -> str:
        return f"models:/{self.name}@champion"


def tiny_bundle(seed: int = 0):
    import torch

    from sa2_pipeline.models import create_model
    from sa2_pipeline.models.bundle import make_bundle

    torch.manual_seed(seed)
    model = create_model("unet", base_channels=4, deep_supervision=False).eval()
    # Centre the logits on a tissue-like image so that thresholds and TTA change the mask.
    sample = torch.from_numpy(he_image(64, 96).transpose(2, 0, 1).copy()).float()[None] / 255
    with torch.no_grad():
        model.head.bias -= model(sample).median()
    return make_bundle(model_name="unet", init_kwargs=model.init_kwargs,
                       state_dict=model.state_dict(), patch_size=64,
                       metadata={"pixel_size_um": 0.5})


@pytest.fixture
def tiny_model(tmp_path, monkeypatch) -> TinyModel:
    import mlflow
    import pandas as pd

    from sa2_pipeline.config import RegistryConfig
    from sa2_pipeline.tracking.registration import ModelToRegister, register_gated

    root = tmp_path / "store"
    root.mkdir()
    uri = f"sqlite:///{root / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("inference-test")
    model = ModelToRegister(tiny_bundle(), model_name="sa2net-tiny",
                            test_scores={"test_dice": 0.5},
                            per_image=pd.DataFrame({"dice": [0.5]}, index=["t0"]),
                            test_set_id="t", input_example_size=64)
    with mlflow.start_run():  # the first version: no champion yet, so it becomes champion
        register_gated(model, config=RegistryConfig(), score_champion=None)
    yield TinyModel("sa2net-tiny", uri, root)
    mlflow.set_tracking_uri(None)


def he_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Pink/purple texture (tissue) on white glass in the left two thirds."""
    rng = np.random.default_rng(seed)
    image = np.full((height, width, 3), 238, dtype=np.uint8)
    tissue = (rng.integers(0, 60, (height, width * 2 // 3, 3))
              + np.array([150, 60, 130])).clip(0, 255)
    image[:, : width * 2 // 3] = tissue
    return image


def command_env(tiny_model: TinyModel) -> dict[str, str]:
    """The environment of ``kedro``/``sa2-pipeline`` run against ``tiny_model``'s store."""
    env = dict(os.environ)
    env.update({"MLFLOW_TRACKING_URI": tiny_model.tracking_uri, "PYTHONPATH": str(REPO / "src"),
                "OMP_NUM_THREADS": "1", "KEDRO_DISABLE_TELEMETRY": "1",
                "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"})
    return env


def kedro_inference(tiny_model: TinyModel, params: str, root: Path
                    ) -> subprocess.CompletedProcess:
    """``kedro run --pipelines inference --params PARAMS`` in a copy of the project at
    ``root`` (made on first use), so nothing lands in the checkout (kedro-viz's ``.viz/``)."""
    if not (root / "pyproject.toml").exists():
        root.mkdir(parents=True, exist_ok=True)
        make_project_copy(root)
    return subprocess.run([str(BIN / "kedro"), "run", "--pipelines", "inference", "--params",
                           params], cwd=root, env=command_env(tiny_model),
                          capture_output=True, text=True, timeout=600, check=False)
