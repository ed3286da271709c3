"""Team mode: a real `mlflow server` (SQLite backend, local artifact root) on loopback.

A retrain runs through MLFLOW_TRACKING_URI=http://127.0.0.1:<port> (the default pipeline
runs inside it), the registry is read back through the server's REST API, and a second
checkout pointed at the same server sees the same champion.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from server_process import running_mlflow_server

VENV_BIN = Path(sys.executable).parent
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:mlflow")


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback
        return json.loads(response.read() or b"{}")


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """``mlflow server`` in its own process group, stopped as a whole at the end."""
    with running_mlflow_server(tmp_path_factory.mktemp("mlflow-server"), start_timeout=180) as url:
        yield url


def test_retrain_through_a_server_and_two_checkouts_share_the_champion(
        make_project_copy, mlflow_server, tmp_path):
    url = mlflow_server
    first = make_project_copy("team-a", tiny_config_in="base")
    second = make_project_copy("team-b", tiny_config_in="base")
    for project in (first, second):
        project.env.update(MLFLOW_TRACKING_URI=url, XDG_CACHE_HOME=str(tmp_path / "cache"))

    # A first retrain on an empty checkout: the embedded data is generated, all of it is
    # new, the default pipeline trains and registers version 1 through the server.
    out = first.run(str(VENV_BIN / "sa2-pipeline"), "retrain", "--env", "synthetic").stdout
    assert "promoted" in out, out[-3000:]
    assert not (first.root / "mlflow.db").exists()  # nothing went to a local store

    name = "sa2net-synthetic"
    champion = _get(f"{url}/api/2.0/mlflow/registered-models/alias?name={name}"
                    "&alias=champion")["model_version"]
    assert champion["version"] == "1"
    tags = {t["key"]: t["value"] for t in champion["tags"]}
    assert tags["sa2.promotion_decision"] == "promoted"
    assert tags["sa2.data_version"].startswith("dvc-")
    runs = _get(f"{url}/api/2.0/mlflow/runs/get?run_id={champion['run_id']}")["run"]
    params = {p["key"]: p["value"] for p in runs["data"]["params"]}
    assert params["registry.data_version"] == tags["sa2.data_version"]

    # The other checkout, through the same server: the same champion, loadable.
    seen = second.run(str(VENV_BIN / "python"), "-c", (
        "import mlflow, numpy as np\n"
        "from mlflow import MlflowClient\n"
        f"v = MlflowClient().get_model_version_by_alias('{name}', 'champion')\n"
        f"m = mlflow.pyfunc.load_model('models:/{name}@champion')\n"
        "print('CHAMPION', v.version, m.predict(np.zeros((40, 40, 3), np.uint8)).shape)"))
    assert "CHAMPION 1 (40, 40)" in seen.stdout

    # A rollback from the other checkout goes through the same server: to the version
    # that is champion already it is a no-op, said so, and writes nothing (REST API).
    rolled = second.run(str(VENV_BIN / "sa2-pipeline"), "rollback", "--model", name,
                        "--to-version", "1", "--reason", "team check")
    assert "version 1 is already the champion; nothing changed" in rolled.stdout
    champion = _get(f"{url}/api/2.0/mlflow/registered-models/alias?name={name}"
                    "&alias=champion")["model_version"]
    assert champion["version"] == "1"
    assert "sa2.rollback_reason" not in {t["key"] for t in champion["tags"]}
