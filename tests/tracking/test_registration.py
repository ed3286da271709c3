"""Gated registration: statistics decide, crashes never move the champion, reruns finish
an interrupted registration without a second version, an identical model is never
registered twice, rollback moves the champion back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from sa2_pipeline.config import RegistryConfig
from sa2_pipeline.models import create_model
from sa2_pipeline.models.bundle import make_bundle

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:mlflow")

NAME = "sa2net-test"
CONFIG = RegistryConfig(gate_resamples=999)
BASE = np.random.default_rng(0).uniform(0.6, 0.8, 12)


def _bundle(seed: int):
    import torch

    torch.manual_seed(seed)
    model = create_model("unet", base_channels=4)
    return make_bundle(model_name="unet", init_kwargs=model.init_kwargs,
                       state_dict=model.state_dict(), patch_size=32)


def _scores(values) -> pd.DataFrame:
    return pd.DataFrame({"dice": values}, index=[f"img{i:02d}" for i in range(len(values))])


SCORES = {1: _scores(BASE), 2: _scores(BASE + 0.08), 3: _scores(BASE + 0.02 * np.sin(
    np.arange(12) * 2.0))}


def _register(seed: int):
    """Register bundle ``seed`` scored SCORES[seed]; the champion is scored from the table."""

    def score_champion(uri: str) -> pd.DataFrame:
        version = int(uri.rsplit("/", 1)[1])
        return SCORES[version]

    return _register_model(_bundle(seed), SCORES[seed], score_champion=score_champion)


def _register_model(bundle, per_image: pd.DataFrame, *, score_champion, name: str = NAME,
                    test_set_id: str = "T", test_dice: float | None = None):
    """Register ``bundle`` with these per-image scores in a new run."""
    import mlflow

    from sa2_pipeline.tracking.registration import ModelToRegister, register_gated

    if test_dice is None:
        test_dice = float(per_image["dice"].mean())
    model = ModelToRegister(bundle, model_name=name, test_scores={"test_dice": test_dice},
                            per_image=per_image, test_set_id=test_set_id,
                            data_version="dvc-x", input_example_size=32)
    with mlflow.start_run():
        return register_gated(model, config=CONFIG, score_champion=score_champion)


@pytest.fixture
def store(tmp_path, monkeypatch):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("registration-test")
    yield uri
    mlflow.set_tracking_uri(None)


def _client():
    from mlflow import MlflowClient

    return MlflowClient()


def _champion() -> str:
    return str(_client().get_model_version_by_alias(NAME, "champion").version)


def _versions(name: str = NAME) -> list[str]:
    return sorted(str(v.version) for v in _client().search_model_versions(f"name = '{name}'"))


def test_gate_numbers_are_recorded_and_an_identical_rerun_registers_nothing(store):
    first = _register(1)
    assert first["decision_promote"] and first["decision_reason"] == "no champion yet"
    better = _register(2)   # consistently +0.08 on every image
    assert better["decision_promote"] and _champion() == "2"
    tags = _client().get_model_version(NAME, "2").tags
    assert tags["sa2.gate.n"] == "12" and tags["sa2.promotion_decision"] == "promoted"
    assert float(tags["sa2.gate.delta"]) == pytest.approx(0.08, abs=1e-6)
    assert 0 < float(tags["sa2.gate.lower_bound"]) <= 0.08
    assert float(tags["sa2.gate.delta_low"]) <= 0.08 <= float(tags["sa2.gate.delta_high"])
    assert "sa2.gate.wilcoxon_p" in tags and tags["sa2.data_version"] == "dvc-x"
    assert tags["sa2.champion_version"] == "1"
    noisy = _register(3)    # +-0.02 around the *first* champion: well below v2
    assert not noisy["decision_promote"] and _champion() == "2"
    again = _register(3)
    assert again["unchanged"] and again["version"] == "3" and _versions() == ["1", "2", "3"]


def test_champion_moves_only_when_better_and_is_rescored_on_this_test_set(store):
    scores = {1: _scores(BASE), 2: _scores(BASE - 0.05), 3: _scores(BASE + 0.05)}

    def by_version(uri: str) -> pd.DataFrame:
        return scores[int(uri.rsplit("/", 1)[1])]

    records = [_register_model(_bundle(v), scores[v], score_champion=by_version)
               for v in (1, 2, 3)]
    assert [r["decision_promote"] for r in records] == [True, False, True]
    assert _champion() == "3"
    assert str(_client().get_model_version_by_alias(NAME, "challenger").version) == "3"
    v2 = _client().get_model_version(NAME, "2").tags
    assert v2["sa2.promotion_decision"] == "rejected"
    assert float(v2["sa2.champion_score"]) == pytest.approx(BASE.mean(), abs=1e-6)
    assert float(v2["sa2.test_dice"]) == pytest.approx((BASE - 0.05).mean(), abs=1e-6)

    # On another test set the champion is re-scored on it before the comparison.
    rescored = []
    record = _register_model(_bundle(4), _scores(BASE + 0.1), test_set_id="B",
                             score_champion=lambda uri: rescored.append(uri) or _scores(BASE))
    assert rescored == [f"models:/{NAME}/3"]
    assert record["decision_promote"]
    assert record["decision_champion_score"] == pytest.approx(BASE.mean())

    # The registered model runs in a plain pyfunc: any image size in, a mask out.
    import mlflow
    from mlflow.exceptions import MlflowException

    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    out = model.predict(np.zeros((37, 50, 3), np.uint8))
    assert out.shape == (37, 50) and out.dtype == np.uint8
    with pytest.raises(MlflowException, match="uint8"):  # floats refused, not cast
        model.predict(np.zeros((8, 8, 3), np.float32) + 0.5)


def test_scores_without_the_gate_metric_are_an_error_and_nothing_is_registered(store):
    per_image = pd.DataFrame({"iou": BASE}, index=_scores(BASE).index)
    with pytest.raises(KeyError, match="'dice'"):
        _register_model(_bundle(1), per_image, test_dice=0.7, score_champion=None)
    assert _versions() == []


def test_identical_model_is_not_registered_twice(store):
    name, bundle = "sa2net-rerun", _bundle(1)
    records = []
    for test_set_id in ("A", "A", "B"):
        again = dict(bundle, metadata={"run": len(records)})  # provenance differs
        records.append(_register_model(again, _scores(BASE), name=name,
                                       test_set_id=test_set_id,
                                       score_champion=lambda uri: _scores(BASE)))
    first, rerun, other_test_set = records
    assert not first["unchanged"] and first["version"] == "1"
    # The re-run of an unchanged model points at version 1 instead of adding version 2.
    assert rerun["unchanged"] and rerun["version"] == "1"
    assert rerun["run_id"] == first["run_id"]
    assert rerun["aliases"] == ["challenger", "champion"]
    assert not rerun["decision_promote"] and "identical to version 1" in rerun["decision_reason"]
    # Scores on another test set are new information: a new version records them.
    assert not other_test_set["unchanged"] and other_test_set["version"] == "2"
    assert _versions(name) == ["1", "2"]
    tags = _client().get_model_version(name, "1").tags
    assert tags["sa2.bundle_digest"] == first["bundle_digest"]


_KILLED_AT = textwrap.dedent("""
    import os, signal, sys
    import mlflow
    from mlflow import MlflowClient
    sys.path.insert(0, sys.argv[2])
    import test_registration as t
    mlflow.set_tracking_uri(sys.argv[1]); mlflow.set_experiment("registration-test")
    where = sys.argv[3]
    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)
    if where == "before_gate":          # the version exists, its gate never ran
        MlflowClient.set_registered_model_alias = lambda self, name, alias, v: die()
    else:                               # decision written, champion alias not yet
        real = MlflowClient.set_registered_model_alias
        MlflowClient.set_registered_model_alias = lambda self, name, alias, v: (
            die() if alias == "champion" else real(self, name, alias, v))
    t._register(2)
""")


@pytest.mark.parametrize("where", ["before_gate", "before_champion_alias"])
def test_sigkill_during_registration_keeps_the_champion_and_the_rerun_finishes(store, where):
    _register(1)
    proc = subprocess.run([sys.executable, "-c", _KILLED_AT, store, os.path.dirname(__file__),
                           where], capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert _champion() == "1"
    assert _versions() == ["1", "2"]
    tags = _client().get_model_version(NAME, "2").tags
    assert tags["sa2.bundle_digest"] and tags["sa2.test_set_id"] == "T"  # never an orphan
    assert ("sa2.promotion_decision" in tags) == (where == "before_champion_alias")

    rerun = _register(2)
    assert not rerun["unchanged"] and rerun["version"] == "2" and rerun["decision_promote"]
    assert _champion() == "2" and _versions() == ["1", "2"]
    assert _register(2)["unchanged"]


def test_rollback_command_moves_the_champion_back(store):
    from sa2_pipeline.cli import main

    _register(1)
    _register(2)
    assert _champion() == "2"
    assert main(["rollback", "--model", NAME, "--to-version", "1"]) == 0
    assert _champion() == "1"
    assert _client().get_model_version(NAME, "1").tags["sa2.rollback_from"] == "2"
    assert main(["rollback", "--model", NAME, "--to-version", "7"]) != 0
    assert _champion() == "1"
    # a rerun of the rolled-back model does not silently re-promote it
    assert _register(2)["unchanged"] and _champion() == "1"


def test_registrations_on_one_store_wait_for_each_other(store, tmp_path):
    from sa2_pipeline.locks import exclusive_lock, registry_lock_path

    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\n"
         "from sa2_pipeline.locks import exclusive_lock\n"
         "with exclusive_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(3)",
         str(registry_lock_path(store))], stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert holder.stdout.readline().strip() == "held"
    record = _register(1)           # waits for the holder, then registers
    assert holder.poll() is not None and record["version"] == "1"
    with exclusive_lock(registry_lock_path(store), wait=0):
        pass


def _gated_v2_rejected() -> dict[str, str]:
    """v1 promoted, v2 (worse on every image) rejected, v3 (better) champion; v2's tags."""
    scores = {1: _scores(BASE), 2: _scores(BASE - 0.05), 3: _scores(BASE + 0.05)}

    def by_version(uri: str) -> pd.DataFrame:
        return scores[int(uri.rsplit("/", 1)[1])]

    for v in (1, 2, 3):
        _register_model(_bundle(v), scores[v], score_champion=by_version)
    assert _champion() == "3"
    tags = _client().get_model_version(NAME, "2").tags
    assert tags["sa2.promotion_decision"] == "rejected" and tags["sa2.promotion_reason"]
    return tags


def _tags(version: str) -> dict[str, str]:
    return dict(_client().get_model_version(NAME, version).tags)


def test_rollback_to_the_champion_is_a_no_op_that_writes_nothing(store, capsys):
    from sa2_pipeline.cli import main

    _gated_v2_rejected()
    before = _tags("3")
    assert main(["rollback", "--model", NAME, "--to-version", "3", "--reason", "x"]) == 0
    out = capsys.readouterr().out
    assert f"{NAME}: version 3 is already the champion; nothing changed" in out
    assert "moved" not in out
    assert _tags("3") == before and not any(k.startswith("sa2.rollback") for k in before)
    assert _champion() == "3"


def test_rollback_to_a_gate_rejected_version_needs_force_and_says_why(store, capsys):
    from sa2_pipeline.cli import main

    rejected = _gated_v2_rejected()
    reason = rejected["sa2.promotion_reason"]

    # refused: names the version, the gate's verdict and reason, and --force; nothing written
    assert main(["rollback", "--model", NAME, "--to-version", "2"]) == 2
    err = capsys.readouterr().err
    assert "version 2" in err and "rejected" in err and reason in err and "--force" in err
    assert _champion() == "3" and _tags("2") == rejected

    # forced: the champion moves and the version records that it was forced, and why
    assert main(["rollback", "--model", NAME, "--to-version", "2", "--force",
                 "--reason", "v3 misses small nuclei"]) == 0
    out = capsys.readouterr().out
    assert "champion moved from version 3 to version 2" in out
    assert "forced" in out and reason in out
    assert _champion() == "2"
    tags = _tags("2")
    assert tags["sa2.rollback_from"] == "3"
    assert tags["sa2.rollback_forced"] == "true"
    assert tags["sa2.rollback_gate_reason"] == reason
    assert tags["sa2.rollback_reason"] == "v3 misses small nuclei"

    # a version the gate promoted needs no --force, and records no forcing
    assert main(["rollback", "--model", NAME, "--to-version", "1"]) == 0
    assert _champion() == "1" and "sa2.rollback_forced" not in _tags("1")


def test_rollback_to_a_missing_version_or_model_is_refused(store, capsys):
    from sa2_pipeline.cli import main

    _gated_v2_rejected()
    assert main(["rollback", "--model", NAME, "--to-version", "9"]) == 2
    assert f"{NAME} has no version 9" in capsys.readouterr().err
    assert main(["rollback", "--model", "sa2net-nope", "--to-version", "1", "--force"]) == 2
    assert "sa2net-nope has no version 1" in capsys.readouterr().err
    assert _champion() == "3"


def _registration_holding_the_lock(store: str, seconds: float) -> subprocess.Popen:
    """A process that holds the store's registry lock as a registration does."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\n"
         "from sa2_pipeline.locks import exclusive_lock\n"
         "with exclusive_lock(sys.argv[1], what='registration on ' + sys.argv[2]):\n"
         "    print('held', flush=True); time.sleep(float(sys.argv[3]))",
         str(_registry_lock_path(store)), store, str(seconds)],
        stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert holder.stdout.readline().strip() == "held"
    return holder


def _registry_lock_path(store: str):
    from sa2_pipeline.locks import registry_lock_path

    return registry_lock_path(store)


def test_rollback_while_a_registration_holds_the_lock_names_it_and_honours_wait(store, capsys):
    """Issue 24, hostile 13: rollback used to wait 62 s, then print a raw LockHeldError that
    called the holder "another rollback". Now it names the registration, exits 75 with
    nothing changed, and --wait decides how long it waits."""
    from sa2_pipeline.cli import main

    _register(1)
    _register(2)
    assert _champion() == "2"
    holder = _registration_holding_the_lock(store, 60)
    try:
        assert main(["rollback", "--model", NAME, "--to-version", "1", "--wait", "0.5"]) == 75
        err = capsys.readouterr().err
        assert f"registration on {store} (pid {holder.pid}" in err, err
        assert "another rollback" not in err and "Traceback" not in err
        assert "Nothing was changed" in err and "--wait" in err
        assert _champion() == "2"
    finally:
        holder.kill()
        holder.wait()
    # a longer --wait outlasts a registration that finishes: the rollback then happens
    short = _registration_holding_the_lock(store, 2)
    try:
        assert main(["rollback", "--model", NAME, "--to-version", "1", "--wait", "30"]) == 0
        assert short.poll() is not None  # it waited for the holder to end
        assert _champion() == "1"
    finally:
        short.kill()
        short.wait()
