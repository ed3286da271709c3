"""Your own slides, end to end: a generic image folder through `kedro run --env custom`.

The test does what docs/datasets.md ("Your own slides") tells a user to do: images and
0/255 masks in data/01_raw/custom/{train,test}/{images,masks}/, the documented block added
to conf/custom/parameters.yml (read from the docs, so they cannot drift apart), then
`kedro run --env custom`. On top of that, only a smaller network (speed, not behaviour).
"""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from sa2_pipeline.datasets.schema import MANIFEST_COLUMNS

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCS = REPO_ROOT / "docs" / "datasets.md"
SIZE = 64
SPLITS = {"train": 6, "test": 2}
# Speed only: a 4-channel network and the tiny baseline, as the other integration tests.
SPEED_ONLY = {
    "model": {"base_channels": 4},
    "baselines": [
        {"name": "unet", "in_channels": 3, "num_classes": 1, "base_channels": 4,
         "deep_supervision": False},
    ],
    "training": {"samples_per_epoch": 4, "num_threads": 1},
    "reporting": {"n_overlays": 2},
}

# MLflow's SQL store triggers a SQLAlchemy deprecation warning of its own.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:mlflow")


def documented_user_config() -> dict:
    """The YAML block docs/datasets.md marks as applied by this test."""
    text = DOCS.read_text()
    match = re.search(
        r"<!-- tests/integration/test_custom_dataset\.py applies this block as it is -->\s*"
        r"```yaml\n(.*?)```",
        text,
        re.DOTALL,
    )
    assert match, f"{DOCS}: the marked configuration block is missing"
    return yaml.safe_load(match.group(1))


def write_slides(raw: Path, rng: np.random.Generator) -> None:
    """RGB PNG 'slides' with dark discs on a pink background; masks 0/255 (binary)."""
    rows, cols = np.mgrid[:SIZE, :SIZE]
    for split, count in SPLITS.items():
        (raw / split / "images").mkdir(parents=True)
        (raw / split / "masks").mkdir(parents=True)
        for index in range(count):
            mask = np.zeros((SIZE, SIZE), dtype=bool)
            for _ in range(int(rng.integers(3, 7))):
                r, c = rng.uniform(6, SIZE - 6, 2)
                mask |= (rows - r) ** 2 + (cols - c) ** 2 <= rng.uniform(3, 8) ** 2
            image = np.empty((SIZE, SIZE, 3), dtype=np.float64)
            image[:] = (230, 180, 210)  # eosin-pink background, RGB
            image[mask] = (90, 60, 150)  # haematoxylin-blue nuclei
            image += rng.normal(0, 12, image.shape)
            rgb = np.clip(image, 0, 255).astype(np.uint8)
            stem = f"slide_{split}_{index:02d}"
            cv2.imwrite(str(raw / split / "images" / f"{stem}.png"), rgb[..., ::-1])  # BGR
            cv2.imwrite(str(raw / split / "masks" / f"{stem}.png"), mask.astype(np.uint8) * 255)


def test_own_slides_train_and_evaluate_with_the_custom_environment(make_project_copy):
    project = make_project_copy("custom-slides", tiny_config_in=None)
    project.dataset = "custom"
    write_slides(project.data("01_raw"), np.random.default_rng(0))
    user_config = documented_user_config()
    project.update_env_parameters("custom", user_config)
    project.update_env_parameters("custom", SPEED_ONLY)

    project.kedro("run", "--env", "custom")

    manifest = pd.read_csv(project.data("02_intermediate", "manifest.csv"), dtype={"id": str})
    assert list(manifest.columns) == MANIFEST_COLUMNS
    assert manifest["split"].value_counts().to_dict() == SPLITS
    assert set(manifest["dataset"]) == {"custom"}
    assert set(manifest["height"]) == set(manifest["width"]) == {SIZE}
    masks = sorted(project.data("02_intermediate", "masks").glob("*.png"))
    assert len(masks) == sum(SPLITS.values())
    values = {int(v) for path in masks for v in np.unique(cv2.imread(str(path), -1))}
    assert values == {0, 1}, "0/255 masks become 0/1"

    history = pd.read_csv(project.data("06_models", "training_history.csv"))
    epochs = user_config["training"]["epochs"]
    assert set(history.groupby(["model", "fold"]).size()) == {epochs}, "epochs per model"

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=project.tracking_uri, registry_uri=project.tracking_uri)
    champion = client.get_model_version_by_alias("sa2net-custom", "champion")
    assert str(champion.version) == "1"
    run = client.get_run(champion.run_id)
    assert run.data.params["training.epochs"] == str(user_config["training"]["epochs"])
    assert run.data.params["data_ingestion.format"] == "folder"

    report = project.data("08_reporting", "report.html")
    html = report.read_text()
    assert "data:image/png;base64," in html, "the HTML report must embed its figures"
    assert "custom" in html
