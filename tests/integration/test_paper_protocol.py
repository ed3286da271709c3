"""The paper's protocol (`kedro run --env paper`) on the embedded data, epochs shortened:
all 5 folds for SA2-Net and the U-Net, each model's 5-fold ensemble, metrics at native
resolution and on the resized masks, and a report comparing both."""

from __future__ import annotations

import pandas as pd
import pytest

# Shortened for the test: 1 epoch, tiny widths, 32-pixel resize. Everything else (resize
# mode, BGR, paper augmentation and loss, 5-fold CV with seed 999, ensemble) is the
# environment's own.
SHORTENED = {
    "data_ingestion": {"synthetic": {"n_train": 10, "n_test": 2, "image_size": 64}},
    "data_processing": {"resize_to": 32},
    "model": {"base_channels": 4},
    "baselines": [{"name": "unet", "base_channels": 4, "deep_supervision": False}],
    "training": {"epochs": 1, "batch_size": 2, "num_threads": 1, "num_workers": 0},
    "evaluation": {"patch_size": 32},
    "reporting": {"n_overlays": 2},
}

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:mlflow")


def test_paper_environment_runs_five_folds_and_the_ensemble(make_project_copy):
    project = make_project_copy("paper", tiny_config_in=None)
    project.dataset = "synthetic-paper"
    project.update_env_parameters("paper", SHORTENED)

    project.kedro("run", "--env", "paper")

    bundles = sorted(p.stem for p in project.data("06_models", "models").glob("*.pt"))
    assert bundles == [f"{m}-fold{k}" for m in ("sa2net", "unet") for k in range(5)]

    splits = pd.read_csv(project.data("03_primary", "splits.csv"))
    train = splits[splits["split"] == "train"]
    assert sorted(train["fold"].value_counts()) == [2, 2, 2, 2, 2]

    per_image = pd.read_csv(project.data("08_reporting", "test_metrics_per_image.csv"))
    members = {"fold0", "fold1", "fold2", "fold3", "fold4", "ensemble"}
    for model in ("sa2net", "unet"):
        assert set(per_image.loc[per_image["model"] == model, "member"]) == members
    assert {"dice", "iou", "dice_32", "iou_32"} <= set(per_image.columns)

    report = project.data("08_reporting", "report.md").read_text()
    comparison = report.split("## Model comparison")[1].split("##")[0]
    for model in ("sa2net", "unet"):
        assert f"| {model} | 5 |" in comparison
    for column in ("dice (folds)", "dice (ensemble)", "dice_32 (folds)", "dice_32 (ensemble)"):
        assert column in comparison

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=project.tracking_uri, registry_uri=project.tracking_uri)
    version = client.get_model_version_by_alias("sa2net-synthetic-paper", "challenger")
    assert version.tags["sa2.ensemble_size"] == "5"
    assert "'channel_order': 'bgr'" in version.tags["sa2.input_convention"]
