"""Team mode with authentication: MLflow's basic-auth app (`mlflow server --app-name
basic-auth`, the `mlflow[auth]` extra) on loopback.

An admin creates two users and the registered model, and gives the service account EDIT on
it; everyone else has the server's default, READ. Then:

- the service account retrains (which runs the default pipeline: a version registered,
  gated, made champion) and imports a release checkpoint (a second version);
- a reader loads `models:/<name>@champion` and predicts, but `sa2-pipeline rollback` and
  `sa2-pipeline import-release` into that model are refused (exit 77, the user named, no
  traceback) and the registry is unchanged;
- no password appears in any command's output, any MLflow param or tag, or any file of
  the checkout (report, dvc.lock, data/).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from server_process import running_mlflow_server

VENV_BIN = Path(sys.executable).parent
NAME = "sa2net-synthetic"
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:mlflow")


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    """``mlflow server --app-name basic-auth``; yields (url, {user: password})."""
    pytest.importorskip("flask_wtf", reason="the mlflow[auth] extra (dev dependencies)")
    root = tmp_path_factory.mktemp("mlflow-auth")
    passwords = {user: secrets.token_urlsafe(12) for user in ("admin", "svc", "reader")}
    (root / "auth.ini").write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{root / 'auth.db'}\n"
        f"admin_username = admin\nadmin_password = {passwords['admin']}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MLFLOW_AUTH_CONFIG_PATH=str(root / "auth.ini"),
               MLFLOW_FLASK_SERVER_SECRET_KEY=secrets.token_hex(16))
    with running_mlflow_server(root, "--app-name", "basic-auth", env=env) as url:
        _create_users_and_model(url, env, passwords)
        yield url, passwords


def _create_users_and_model(url: str, env: dict[str, str], passwords: dict[str, str]) -> None:
    """As the admin: the two users, the registered model, EDIT on it for the service account."""
    admin = subprocess.run(
        [sys.executable, "-c",
         "import sys\nfrom mlflow import MlflowClient\n"
         "from mlflow.server import get_app_client\n"
         "url = sys.argv[1]\nauth = get_app_client('basic-auth', tracking_uri=url)\n"
         "auth.create_user('svc', sys.argv[2])\nauth.create_user('reader', sys.argv[3])\n"
         f"MlflowClient(url).create_registered_model('{NAME}')\n"
         f"auth.grant_user_permission('svc', 'registered_model', '{NAME}', 'EDIT')\n",
         url, passwords["svc"], passwords["reader"]],
        env={**env, "MLFLOW_TRACKING_USERNAME": "admin",
             "MLFLOW_TRACKING_PASSWORD": passwords["admin"]},
        capture_output=True, text=True, check=False, timeout=120)
    assert admin.returncode == 0, admin.stderr[-3000:]


def _as(project, user: str, password: str) -> dict[str, str]:
    return {**project.env, "MLFLOW_TRACKING_USERNAME": user,
            "MLFLOW_TRACKING_PASSWORD": password}


def _admin_client(url: str):
    """A client as the admin (the test has put the admin's credentials in the environment)."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=url, registry_uri=url)


def test_service_account_retrains_reader_reads_and_is_refused_no_credential_leaks(
        make_project_copy, auth_server, tmp_path, monkeypatch):
    url, passwords = auth_server
    project = make_project_copy("team-auth", tiny_config_in="base")
    project.env.update(MLFLOW_TRACKING_URI=url, XDG_CACHE_HOME=str(tmp_path / "cache"))
    svc, reader = _as(project, "svc", passwords["svc"]), _as(project, "reader",
                                                               passwords["reader"])
    outputs = []

    # The service account: a retrain (the default pipeline inside: version 1, champion),
    # then an import of a release checkpoint (version 2), so the model has two versions.
    out = project.run(str(VENV_BIN / "sa2-pipeline"), "retrain", "--env", "synthetic",
                      env=svc).stdout
    outputs.append(out)
    assert "promoted" in out, out[-3000:]
    from test_cli import fake_release_checkpoint  # the release format, tiny weights

    ckpt = tmp_path / "best_model.pth"
    fake_release_checkpoint(ckpt)
    imported = project.run(str(VENV_BIN / "sa2-pipeline"), "import-release", str(ckpt),
                           "--dataset", "synthetic", "--model-name", NAME, env=svc)
    outputs.append(imported.stdout)
    assert f"registered {NAME} version 2" in imported.stdout, imported.stdout[-3000:]

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", passwords["admin"])
    client = _admin_client(url)
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{NAME}'"))
    assert versions == [1, 2], versions
    champion = client.get_model_version_by_alias(NAME, "champion").version
    other = "2" if champion == "1" else "1"
    tags_before = dict(client.get_model_version(NAME, other).tags)

    # The reader: loads the champion and predicts ...
    seen = project.run(str(VENV_BIN / "python"), "-c", (
        "import mlflow, numpy as np\n"
        f"m = mlflow.pyfunc.load_model('models:/{NAME}@champion')\n"
        "print('PREDICTED', m.predict(np.zeros((40, 40, 3), np.uint8)).shape)"), env=reader)
    assert "PREDICTED (40, 40)" in seen.stdout
    # ... but may not move the alias ...
    rolled = project.run(str(VENV_BIN / "sa2-pipeline"), "rollback", "--model", NAME,
                         "--to-version", other, "--force", env=reader, check=False)
    outputs.append(rolled.stdout)
    assert rolled.returncode == 77, rolled.stdout[-3000:]
    assert "user 'reader'" in rolled.stdout and "lacks the permission" in rolled.stdout
    assert "Traceback" not in rolled.stdout
    # ... nor register a version
    imported = project.run(str(VENV_BIN / "sa2-pipeline"), "import-release", str(ckpt),
                           "--dataset", "synthetic", "--model-name", NAME, env=reader,
                           check=False)
    outputs.append(imported.stdout)
    assert imported.returncode == 77, imported.stdout[-3000:]
    assert "Traceback" not in imported.stdout

    # The registry is as the service account left it.
    client = _admin_client(url)
    assert sorted(int(v.version) for v in client.search_model_versions(
        f"name = '{NAME}'")) == [1, 2]
    assert client.get_model_version_by_alias(NAME, "champion").version == champion
    assert dict(client.get_model_version(NAME, other).tags) == tags_before

    # No credential anywhere: outputs, MLflow params and tags, the checkout's files.
    secrets_ = [passwords["svc"], passwords["reader"], passwords["admin"]]
    for text in outputs:
        assert not any(s in text for s in secrets_)
    experiments = [e.experiment_id for e in client.search_experiments()]
    for run in client.search_runs(experiments):
        logged = " ".join([*run.data.params.values(), *run.data.tags.values()])
        assert not any(s in logged for s in secrets_), run.info.run_id
    for version in client.search_model_versions(f"name = '{NAME}'"):
        assert not any(s in " ".join(version.tags.values()) for s in secrets_)
    for path in project.root.rglob("*"):
        if path.is_file() and ".git" not in path.parts:
            data = path.read_bytes()
            assert not any(s.encode() in data for s in secrets_), path
