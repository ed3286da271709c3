"""Hostile case 13: a user's mistake prints one message, not a raw traceback.

Each case goes through the entry point a user types: ``sa2-pipeline`` (``main`` in
process) or ``kedro run`` in a throw-away copy of the project (as in
``tests/test_startup_validation.py``).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from kedro_project import kedro_run, make_project_copy
from sa2_pipeline import cli
from sa2_pipeline.cli import main
from sa2_pipeline.tracking import champion

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def tracking(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.delenv("SA2_VERBOSE", raising=False)
    return tmp_path


@pytest.fixture
def project_copy(tmp_path) -> Path:
    return make_project_copy(tmp_path / "project")


# -- 1. segment --out that cannot be written -------------------------------------------


def _out_cases() -> list[str]:
    cases = ["a-file", "under-a-file"]
    if os.geteuid() != 0:  # root ignores file modes
        cases.append("read-only")
    return cases


@pytest.mark.parametrize("case", _out_cases())
def test_segment_to_an_unwritable_out_names_the_folder_before_loading_a_model(
        tracking, capsys, monkeypatch, case):
    image = tracking / "a.png"
    image.write_bytes(b"not read: the output folder is refused first")
    afile = tracking / "results.txt"
    afile.write_text("a file, not a folder\n")
    if case == "a-file":
        out, problem = afile, "is a file, not a folder"
    elif case == "under-a-file":
        out, problem = afile / "sub", f"{afile} is a file, not a folder"
    else:
        out, problem = tracking / "locked", "is not writable"
        out.mkdir()
        out.chmod(0o555)

    def no_model(uri):
        raise AssertionError(f"the model {uri} was resolved before --out was checked")

    monkeypatch.setattr(cli, "resolve_model", no_model)
    with pytest.raises(SystemExit) as caught:
        main(["segment", str(image), "--model", "models:/nothing@champion", "--out",
              str(out)])
    message = caught.value.code
    assert isinstance(message, str), message  # Python prints it alone and exits 1
    assert message.startswith("segment: --out ") and str(out) in message
    assert problem in message
    assert "Traceback" not in capsys.readouterr().err


# -- 2. kedro inference without a champion -----------------------------------------------


def test_kedro_inference_without_a_champion_says_train_first(project_copy):
    result = kedro_run(project_copy, "--pipelines", "inference", "--env", "synthetic")
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "no champion for sa2net-synthetic yet: run the training pipeline first, or set " \
           "inference.model_uri" in out, out
    assert "Traceback" not in out, out


# -- 3. YAML syntax errors and duplicate keys in conf/ -----------------------------------

_BROKEN = {
    "syntax": ("training: {epochs: 3\nmodel: {name: unet}\n", "line 2"),
    "duplicate": ("training:\n  epochs: 3\n  batch_size: 2\n  epochs: 4\n",
                  "key 'epochs' is given twice (lines 2 and 4)"),
}


@pytest.mark.parametrize("kind", sorted(_BROKEN))
def test_kedro_run_with_a_broken_parameters_file_names_file_and_line(project_copy, kind):
    text, where = _BROKEN[kind]
    broken = project_copy / "conf" / "local" / "parameters.yml"
    broken.write_text(text)
    result = kedro_run(project_copy)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert str(broken) in out and where in out, out
    assert "Traceback" not in out, out
    assert "Running node" not in out


@pytest.mark.parametrize("kind", sorted(_BROKEN))
def test_detect_with_a_broken_parameters_file_names_file_and_line(project_copy, tracking,
                                                                  capsys, kind):
    text, where = _BROKEN[kind]
    broken = project_copy / "conf" / "synthetic" / "parameters_broken.yml"
    broken.write_text(text)
    code = main(["detect", "--env", "synthetic", "--project-dir", str(project_copy)])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("Error: ") and str(broken) in err and where in err, err
    assert "Traceback" not in err


# -- 4. MLflow's SQLite store locked by another writer ----------------------------------


def test_a_locked_mlflow_database_says_busy_and_names_the_store(tracking, capsys,
                                                               monkeypatch):
    def locked(*args, **kwargs):
        try:
            raise sqlite3.OperationalError("database is locked")
        except sqlite3.OperationalError as err:
            raise RuntimeError("could not set the alias") from err

    monkeypatch.setattr(champion, "rollback_champion", locked)
    code = main(["rollback", "--model", "sa2net-x", "--to-version", "1"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("Error: the MLflow database is busy"), err
    assert f"sqlite:///{tracking}/mlflow.db" in err
    assert "retry" in err.lower() and "mlflow server" in err.lower()
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
