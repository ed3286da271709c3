"""Provenance rows: git commit (and dirty flag), DVC data version, MLflow run link."""

import shutil
import subprocess

import pytest
import yaml

from sa2_pipeline.reporting.provenance import (
    collect_provenance,
    dvc_data_version,
    git_commit,
    mlflow_run_link,
)


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_git_commit_and_dirty_flag(tmp_path):
    assert git_commit(tmp_path) == "unknown"
    run = lambda *a: subprocess.run(a, cwd=tmp_path, check=True, capture_output=True)  # noqa: E731
    run("git", "init", "-q")
    run("git", "config", "user.email", "a@b")
    run("git", "config", "user.name", "a")
    (tmp_path / "f.txt").write_text("1")
    run("git", "add", "f.txt")
    run("git", "commit", "-qm", "x")
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert git_commit(tmp_path) == sha
    (tmp_path / "f.txt").write_text("2")
    assert git_commit(tmp_path) == f"{sha}+dirty"


def test_dvc_data_version_reads_the_raw_folder_hash(tmp_path):
    assert dvc_data_version(tmp_path, "synthetic") is None
    lock = {"schema": "2.0", "stages": {"data_ingestion@synthetic": {"outs": [
        {"path": "data/01_raw/synthetic", "md5": "abc.dir"},
        {"path": "data/02_intermediate/synthetic/manifest.csv", "md5": "def"}]}}}
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    assert dvc_data_version(tmp_path, "synthetic") == "abc.dir"
    assert dvc_data_version(tmp_path, "glas") is None
    # The registry's record wins over the lock file.
    rows = collect_provenance(tmp_path, "synthetic", "t1", "run9", data_version="v7")
    assert rows["data_version"] == "v7" and rows["mlflow_run_id"] == "run9"


def test_mlflow_run_link():
    assert mlflow_run_link(None, None, None) is None
    assert mlflow_run_link("sqlite:///mlflow.db", "3", "r1") == (
        "http://127.0.0.1:5000/#/experiments/3/runs/r1")
    assert mlflow_run_link("https://mlflow.example.org/", "1", "r2") == (
        "https://mlflow.example.org/#/experiments/1/runs/r2")
