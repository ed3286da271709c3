"""`kedro run` on a fresh copy of the project: data, report, MLflow run, registry, serving."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import yaml

from sa2_pipeline.datasets.schema import MANIFEST_COLUMNS

# MLflow's SQL store triggers a SQLAlchemy deprecation warning of its own.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:mlflow")


def _names(project) -> tuple[str, str]:
    """(experiment, registered model) of the project's dataset (conf/base/mlflow.yml,
    parameters_evaluation.yml)."""
    return f"sa2-{project.dataset}", f"sa2net-{project.dataset}"


def _client(project):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=project.tracking_uri, registry_uri=project.tracking_uri)


def _check_data_and_report(project) -> None:
    n_train = project.tiny["data_ingestion"]["synthetic"]["n_train"]
    n_test = project.tiny["data_ingestion"]["synthetic"]["n_test"]

    raw = project.data("01_raw")
    train_dir = raw / "MoNuSeg 2018 Training Data"
    assert len(list((train_dir / "Tissue Images").glob("*.tif"))) == n_train
    assert len(list((train_dir / "Annotations").glob("*.xml"))) == n_train
    assert len(list((raw / "MoNuSegTestData").glob("*.tif"))) == n_test
    assert len(list((raw / "MoNuSegTestData").glob("*.xml"))) == n_test

    manifest = pd.read_csv(project.data("02_intermediate", "manifest.csv"))
    assert len(manifest) == n_train + n_test
    assert list(manifest.columns) == MANIFEST_COLUMNS
    assert manifest["id"].is_unique

    splits = pd.read_csv(project.data("03_primary", "splits.csv"))
    official_test = set(manifest.loc[manifest["split"] == "test", "id"])
    assert len(official_test) == n_test
    assert set(splits.loc[splits["split"] == "test", "id"]) == official_test
    assert set(splits["id"]) == set(manifest["id"])
    assert set(splits["split"]) <= {"train", "val", "test"}

    models = sorted(p.stem for p in project.data("06_models", "models").glob("*.pt"))
    training = yaml.safe_load((project.root / "conf/base/parameters_training.yml").read_text())
    expected = [training["model"]["name"], *(b["name"] for b in project.tiny["baselines"])]
    assert models == sorted(f"{name}-fold0" for name in expected)
    report_dir = project.data("08_reporting")
    assert (report_dir / "report.md").stat().st_size > 0
    html = (report_dir / "report.html").read_text()
    assert "data:image/png;base64," in html, "the HTML report must embed its figures"
    assert list((report_dir / "figures").glob("*.png")), "no figure written"
    summary = json.loads((report_dir / "test_summary.json").read_text())
    assert 0.0 <= summary["test_dice"] <= 1.0


def _check_first_mlflow_run(project) -> None:
    experiment_name, model_name = _names(project)
    epochs = project.tiny["training"]["epochs"]
    client = _client(project)
    experiment = client.get_experiment_by_name(experiment_name)
    assert experiment is not None, f"no MLflow experiment {experiment_name!r}"
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1, "one `kedro run` must be exactly one MLflow run"
    run = runs[0]
    assert run.info.status == "FINISHED"

    params = run.data.params
    assert params["training.epochs"] == str(epochs)  # the conf/local override...
    assert params["model.base_channels"] == str(project.tiny["model"]["base_channels"])
    assert params["training.lr"] == "0.001"  # ...soft-merged: other base keys are kept

    # Per-epoch metrics of every (model, fold) run: "<model>/fold<k>/val_dice".
    per_epoch = [k for k in run.data.metrics if k.rsplit("/", 1)[-1] == "val_dice"]
    assert len(per_epoch) == 1 + len(project.tiny["baselines"]), sorted(run.data.metrics)
    for key in per_epoch:
        history = client.get_metric_history(run.info.run_id, key)
        assert len({m.step for m in history}) == epochs, f"{key} must be logged every epoch"
    assert any(key.endswith("test_dice") for key in run.data.metrics)

    artifacts = {a.path: a for a in client.list_artifacts(run.info.run_id)}
    assert "report.html" in artifacts, sorted(artifacts)
    assert "figures" in artifacts and artifacts["figures"].is_dir, sorted(artifacts)
    assert client.list_artifacts(run.info.run_id, "figures")

    champion = client.get_model_version_by_alias(model_name, "champion")
    challenger = client.get_model_version_by_alias(model_name, "challenger")
    assert str(champion.version) == str(challenger.version) == "1"
    assert champion.run_id == run.info.run_id
    assert champion.tags["sa2.promotion_decision"] == "promoted"
    # issue 21: the version carries its ONNX export, checked against eager before registering
    assert champion.tags["sa2.onnx.status"] == "exported", champion.tags
    assert float(champion.tags["sa2.onnx.mask_agreement"]) >= 0.9999


def _check_unchanged_rerun_registers_nothing(project) -> None:
    experiment_name, model_name = _names(project)
    client = _client(project)
    experiment = client.get_experiment_by_name(experiment_name)
    assert len(client.search_runs([experiment.experiment_id])) == 2
    versions = client.search_model_versions(f"name = '{model_name}'")
    assert [str(v.version) for v in versions] == ["1"], "an identical model was registered again"
    record = json.loads(project.data("08_reporting", "model_registration.json").read_text())
    assert record["unchanged"] is True and str(record["version"]) == "1", record
    champion = client.get_model_version_by_alias(model_name, "champion")
    assert str(champion.version) == "1"
    assert champion.tags["sa2.bundle_digest"] == record["bundle_digest"]


def _check_changed_run_promotion_gate(project) -> None:
    experiment_name, model_name = _names(project)
    client = _client(project)
    experiment = client.get_experiment_by_name(experiment_name)
    assert len(client.search_runs([experiment.experiment_id])) == 3

    challenger = client.get_model_version_by_alias(model_name, "challenger")
    champion = client.get_model_version_by_alias(model_name, "champion")
    assert str(challenger.version) == "2", "every registered version becomes the challenger"
    v1 = client.get_model_version(model_name, "1")
    v2 = client.get_model_version(model_name, "2")
    decision = v2.tags["sa2.promotion_decision"]
    margin = 0.0  # registry.promotion_margin in conf/base/parameters_evaluation.yml
    tolerance = 0.02  # registry.class_tolerance
    # The statistical gate: the paired bootstrap's one-sided lower bound of per-image
    # delta Dice above the margin, and the (one, foreground) class not regressing.
    better = (float(v2.tags["sa2.gate.lower_bound"]) > margin
              and float(v2.tags["sa2.gate.delta_dice"]) >= -tolerance)
    assert decision == ("promoted" if better else "rejected"), v2.tags
    assert v2.tags["sa2.gate.decision"] == decision
    assert str(champion.version) == ("2" if better else "1"), "champion moved against the gate"
    assert v2.tags["sa2.champion_version"] == "1"
    assert int(v2.tags["sa2.gate.n"]) == 2  # the tiny test set
    # The training pixel size: the MoNuSeg format's own, then the one passed with --params.
    assert v1.tags["sa2.pixel_size_um"] == "0.25"
    assert v2.tags["sa2.pixel_size_um"] == "0.4"
    # ...and the rest of what a user needs (this copy has no git or DVC: "unknown").
    assert {"sa2.git_commit", "sa2.data_version"} <= v2.tags.keys()
    assert "channel_order" in v2.tags["sa2.input_convention"]
    # the champion was re-scored per image through its pyfunc on the same test images
    assert float(v2.tags["sa2.champion_score"]) == pytest.approx(
        float(v1.tags["sa2.test_dice"]), abs=0.05)


# Run in a fresh interpreter, outside the project: no Kedro session, no conf, no src.
_LOAD_CHAMPION = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model("models:/{model_name}@champion")
    rng = np.random.default_rng(0)
    outputs = [model.predict(np.zeros((300, 277, 3), np.uint8)),
               model.predict(rng.integers(0, 256, (97, 131, 3), dtype=np.uint8))]
    package = sys.modules.get("sa2_pipeline")
    print(json.dumps({{
        "types": [type(o).__name__ for o in outputs],
        "shapes": [list(o.shape) for o in outputs],
        "dtypes": [str(o.dtype) for o in outputs],
        "values": sorted({{int(v) for o in outputs for v in np.unique(o)}}),
        "kedro_imported": "kedro" in sys.modules,
        "package_file": getattr(package, "__file__", None),
    }}))
    """
)


def _check_champion_serves_without_kedro(project, workdir) -> None:
    _, model_name = _names(project)
    env = {k: v for k, v in project.env.items() if k != "PYTHONPATH"}
    proc = project.run(
        sys.executable, "-c", _LOAD_CHAMPION.format(model_name=model_name),
        cwd=workdir, env=env, timeout=300,
    )
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith('{"types"')][-1]
    result = json.loads(line)
    assert result["types"] == ["ndarray", "ndarray"]
    assert result["shapes"] == [[300, 277], [97, 131]]
    assert result["dtypes"] == ["uint8", "uint8"]
    assert set(result["values"]) <= {0, 1}
    assert result["kedro_imported"] is False
    # The registered model carries its own code (MLflow code_paths, in the model's code/
    # folder): the project's src is not what runs.
    package_file = Path(result["package_file"])
    assert "code" in package_file.parts, package_file
    assert not package_file.is_relative_to(project.root / "src"), package_file


def test_kedro_run_end_to_end(kedro_project, tmp_path):
    _check_data_and_report(kedro_project)
    _check_first_mlflow_run(kedro_project)

    # Re-running with nothing changed resumes the finished training and registers nothing.
    kedro_project.kedro("run")
    _check_unchanged_rerun_registers_nothing(kedro_project)

    # Another seed trains another model: version 2, and the gate decides about champion.
    # It also says the raw data's pixel size, recorded as the new version's tag.
    kedro_project.kedro("run", "--params", "training.seed=1,data_ingestion.pixel_size_um=0.4")
    _check_changed_run_promotion_gate(kedro_project)

    _check_champion_serves_without_kedro(kedro_project, tmp_path)

    # Re-evaluating with another setting gets an MLflow run of its own (MLflow never
    # changes a logged param) instead of failing on the training run it would continue.
    kedro_project.kedro("run", "--pipelines", "evaluation", "--params", "evaluation.tta=true")
    _check_reevaluation_has_its_own_run(kedro_project)


def _check_reevaluation_has_its_own_run(project) -> None:
    experiment_name, _ = _names(project)
    client = _client(project)
    experiment = client.get_experiment_by_name(experiment_name)
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"])
    assert len(runs) == 4
    assert runs[0].data.params["evaluation.tta"] == "True"
    assert runs[0].info.status == "FINISHED"
    assert all(r.data.params.get("evaluation.tta") == "False" for r in runs[1:])
