"""A champion whose artifacts are gone wedges every retrain (its re-scoring fails): the
failure names that version and says what to do, instead of "run the same command again
to resume" ("Seams and hardening", hostile case 6)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sa2_pipeline.cli import main
from sa2_pipeline.pipelines.retraining.request import build_request
from sa2_pipeline.retraining import orchestrate
from sa2_pipeline.retraining.versioning import StageFailedError

ROOT = Path(__file__).resolve().parents[2]
TINY_RAW = {"data_ingestion": {"synthetic": {"n_train": 2, "n_test": 1, "image_size": 64}}}
MANIFEST = Path("data") / "02_intermediate" / "synthetic" / "manifest.csv"


@pytest.fixture
def champion_without_artifacts(tmp_path, monkeypatch):
    """A store whose champion (version 1 of sa2net-lost) has lost its artifacts."""
    import mlflow
    import pandas as pd
    import torch

    from sa2_pipeline.config import RegistryConfig
    from sa2_pipeline.models import create_model
    from sa2_pipeline.models.bundle import make_bundle
    from sa2_pipeline.tracking.registration import ModelToRegister, register_gated

    store, artifacts = tmp_path / "store", tmp_path / "store" / "artifacts"
    store.mkdir()
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{store / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment_id=mlflow.create_experiment(
        "lost", artifact_location=artifacts.as_uri()))
    torch.manual_seed(0)
    model = create_model("unet", base_channels=4, deep_supervision=False).eval()
    bundle = make_bundle(model_name="unet", init_kwargs=model.init_kwargs,
                         state_dict=model.state_dict(), patch_size=64)
    with mlflow.start_run():
        register_gated(ModelToRegister(bundle, model_name="sa2net-lost",
                                       test_scores={"test_dice": 0.5},
                                       per_image=pd.DataFrame({"dice": [0.5]}, index=["t0"]),
                                       test_set_id="t", input_example_size=64),
                       config=RegistryConfig(), score_champion=None)
    shutil.rmtree(artifacts)  # the artifact store lost them
    yield "sa2net-lost"
    mlflow.set_tracking_uri(None)


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "project"
    shutil.copytree(ROOT / "conf", root / "conf")
    (root / "conf" / "synthetic" / "parameters.yml").write_text(json.dumps(TINY_RAW))
    return root


def test_a_champion_without_artifacts_is_named_with_what_to_do(
        project, champion_without_artifacts, capsys, monkeypatch):
    name = champion_without_artifacts

    def fake_versioning(*args):
        manifest = build_request(project, "synthetic").build_manifest()
        (project / MANIFEST).parent.mkdir(parents=True, exist_ok=True)
        manifest.to_csv(project / MANIFEST, index=False)
        return {"data_version": "dvc-x", "pushed": False}

    def kedro_run_fails_rescoring(command, cwd):  # as the gate's re-scoring fails
        raise StageFailedError(command, 1)

    monkeypatch.setattr(orchestrate, "version_raw_data", fake_versioning)
    monkeypatch.setattr(orchestrate, "run_command", kedro_run_fails_rescoring)
    args = ["retrain", "--env", "synthetic", "--project-dir", str(project),
            "--params", f"registry.model_name={name}"]
    for _ in range(2):  # the rerun says the same, not "resume" alone
        code = main(args)
        out = capsys.readouterr().out
        assert code == orchestrate.EXIT_FAILED, out
        assert f"the champion, {name} version 1, cannot be read" in out, out
        assert "its artifacts are missing" in out
        assert f"sa2-pipeline rollback --model {name} --to-version" in out
