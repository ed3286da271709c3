"""Registration with aliases and the promotion gate, on a throwaway MLflow store."""

import numpy as np
import pytest

from sa2_pipeline.models import create_model
from sa2_pipeline.models.bundle import make_bundle
from sa2_pipeline.tracking.registry import decide_promotion


def test_gate_promotes_without_champion_and_only_when_better_by_margin():
    assert decide_promotion(0.5, None, metric="test_dice", margin=0.1).promote
    assert decide_promotion(0.81, 0.80, metric="test_dice", margin=0.0).promote
    assert not decide_promotion(0.80, 0.80, metric="test_dice", margin=0.0).promote
    assert not decide_promotion(0.85, 0.80, metric="test_dice", margin=0.05).promote
    assert "0.8500 <= champion 0.8000" in decide_promotion(
        0.85, 0.80, metric="test_dice", margin=0.05).reason


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("registry-test")
    yield mlflow
    mlflow.set_tracking_uri(None)


def _bundle():
    model = create_model("unet", base_channels=4)
    return make_bundle(model_name="unet", init_kwargs=model.init_kwargs,
                       state_dict=model.state_dict(), patch_size=32)


def test_register_and_promote_moves_champion_only_when_better(mlflow_store):
    from mlflow import MlflowClient

    from sa2_pipeline.tracking.registry import register_and_promote

    mlflow = mlflow_store
    name = "sa2net-test"
    results = []
    for score, test_id in ((0.70, "A"), (0.65, "A"), (0.75, "A")):
        with mlflow.start_run():
            results.append(register_and_promote(
                _bundle(), model_name=name, test_scores={"test_dice": score},
                test_set_id=test_id, input_example_size=32))
    assert [r["decision_promote"] for r in results] == [True, False, True]
    client = MlflowClient()
    assert str(client.get_model_version_by_alias(name, "champion").version) == "3"
    assert str(client.get_model_version_by_alias(name, "challenger").version) == "3"
    v2 = client.get_model_version(name, "2")
    assert v2.tags["sa2.promotion_decision"] == "rejected"
    assert float(v2.tags["sa2.champion_score"]) == pytest.approx(0.70)
    assert float(v2.tags["sa2.test_dice"]) == pytest.approx(0.65)

    # A champion scored on another test set is re-scored before the comparison.
    rescored = []
    with mlflow.start_run():
        record = register_and_promote(
            _bundle(), model_name=name, test_scores={"test_dice": 0.60}, test_set_id="B",
            input_example_size=32, score_champion=lambda uri: rescored.append(uri) or 0.5)
    assert rescored == [f"models:/{name}/3"]
    assert record["decision_promote"] and record["decision_champion_score"] == 0.5

    # The registered model runs in a plain pyfunc: any image size in, a mask out.
    model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    out = model.predict(np.zeros((37, 50, 3), np.uint8))
    assert out.shape == (37, 50) and out.dtype == np.uint8
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException, match="uint8"):  # floats refused, not cast
        model.predict(np.zeros((8, 8, 3), np.float32) + 0.5)


def test_unknown_promotion_metric_is_an_error(mlflow_store):
    from sa2_pipeline.tracking.registry import register_and_promote

    with pytest.raises(KeyError, match="test_iou"):
        register_and_promote(_bundle(), model_name="x", test_scores={"test_dice": 1.0},
                             test_set_id="A", metric="test_iou")


def test_identical_model_is_not_registered_twice(mlflow_store):
    from mlflow import MlflowClient

    from sa2_pipeline.tracking.registry import register_and_promote

    mlflow = mlflow_store
    name = "sa2net-rerun"
    bundle = _bundle()
    records = []
    for score, test_id in ((0.70, "A"), (0.70, "A"), (0.70, "B")):
        again = dict(bundle, metadata={"run": len(records)})  # provenance differs
        with mlflow.start_run():
            records.append(register_and_promote(
                again, model_name=name, test_scores={"test_dice": score},
                test_set_id=test_id, input_example_size=32))
    first, rerun, other_test_set = records
    assert not first["unchanged"] and first["version"] == "1"
    # The re-run of an unchanged model points at version 1 instead of adding version 2.
    assert rerun["unchanged"] and rerun["version"] == "1"
    assert rerun["run_id"] == first["run_id"]
    assert rerun["aliases"] == ["challenger", "champion"]
    assert not rerun["decision_promote"] and "identical to version 1" in rerun["decision_reason"]
    # Scores on another test set are new information: a new version records them.
    assert not other_test_set["unchanged"] and other_test_set["version"] == "2"
    client = MlflowClient()
    versions = client.search_model_versions(f"name = '{name}'")
    assert sorted(str(v.version) for v in versions) == ["1", "2"]
    assert client.get_model_version(name, "1").tags["sa2.bundle_digest"] == first["bundle_digest"]
