"""The frozen test set survives a retrain killed in its DVC step, and no copy of a test
slide joins training ("Seams and hardening", hostile cases 2 and 3).

Everything goes through ``sa2-pipeline detect/retrain`` on a copy of conf/ with tiny
synthetic slides; ingestion and training are faked (their commands must not run).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import tifffile

from sa2_pipeline.cli import main
from sa2_pipeline.pipelines.retraining.request import build_request
from sa2_pipeline.retraining import orchestrate

RAW = Path("data") / "01_raw" / "synthetic"
TEST_DIR = RAW / "MoNuSegTestData"
TRAIN_IMAGES = RAW / "MoNuSeg 2018 Training Data" / "Tissue Images"
TRAIN_XML = RAW / "MoNuSeg 2018 Training Data" / "Annotations"
STATE = Path("data") / "08_reporting" / "synthetic" / "retraining"
MANIFEST = Path("data") / "02_intermediate" / "synthetic" / "manifest.csv"


@pytest.fixture
def project(offline_project):
    """conf/ in a temporary folder; ingestion and training must not run unless faked."""
    return offline_project(n_train=3, n_test=2)


def _detect(root: Path, capsys, *options: str) -> dict:
    code = main(["detect", "--env", "synthetic", "--project-dir", str(root), *options])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["code"] == code, result
    return result


def _ingest(root: Path) -> None:
    """What ``dvc repro data_ingestion@synthetic`` writes: the manifest of the raw folder."""
    manifest = build_request(root, "synthetic").build_manifest()
    (root / MANIFEST).parent.mkdir(parents=True, exist_ok=True)
    manifest.to_csv(root / MANIFEST, index=False)


def _edit_test_annotation(root: Path) -> str:
    """Drop one nucleus from the first test tile's XML; returns the tile's id."""
    xml = sorted((root / TEST_DIR).glob("*.xml"))[0]
    text = xml.read_text()
    edited = re.sub(r"<Region Id=.*?</Region>\s*", "", text, count=1, flags=re.S)
    assert edited != text
    xml.write_text(edited)
    return xml.stem


def _ingested_and_seen(root: Path, capsys) -> None:
    """A raw folder, its manifest and a detection that found nothing new."""
    assert _detect(root, capsys)["retrain"]  # writes the embedded tiles, nothing ingested
    _ingest(root)
    seen = _detect(root, capsys)
    assert seen["code"] == 0 and not seen["retrain"], seen


# ------------------------------------------------------------------ hostile 2: killed DVC


def test_a_test_annotation_edited_after_a_kill_in_dvc_repro_is_still_caught(project, capsys):
    _ingested_and_seen(project, capsys)
    (project / MANIFEST).unlink()  # `dvc repro` deleted its outputs, then was killed
    tile = _edit_test_annotation(project)

    result = _detect(project, capsys)
    assert result["code"] == orchestrate.EXIT_TEST_SET_CHANGED == 4, result
    assert not result["retrain"] and tile in result["message"]
    code = main(["retrain", "--env", "synthetic", "--project-dir", str(project)])
    assert code == 4, capsys.readouterr().out
    # allowed on purpose it still is, and nothing else stops it
    assert _detect(project, capsys, "--change-test-set")["retrain"]
    # the reference was recorded when the ingested data was first seen
    assert (project / STATE / "frozen_test_set.json").is_file()


def test_a_completed_retrain_records_the_test_set_it_was_scored_on(
        project, capsys, monkeypatch):
    assert _detect(project, capsys)["retrain"]  # first data, never ingested
    reports = project / "data" / "08_reporting" / "synthetic"

    def fake_versioning(*args):
        _ingest(project)
        return {"data_version": "dvc-x", "pushed": False}

    def fake_kedro_run(command, cwd):
        (reports / "model_registration.json").write_text(json.dumps(
            {"registered": True, "version": 1, "decision_promote": True,
             "decision_reason": "no champion yet"}))
        (reports / "test_summary.json").write_text(json.dumps(
            {"test_dice": 0.5, "n_images": 2, "test_set_id": "t1"}))

    monkeypatch.setattr(orchestrate, "version_raw_data", fake_versioning)
    monkeypatch.setattr(orchestrate, "run_command", fake_kedro_run)
    assert main(["retrain", "--env", "synthetic", "--project-dir", str(project)]) == 0
    capsys.readouterr()

    (project / MANIFEST).unlink()  # the next retrain is killed inside `dvc repro`
    _edit_test_annotation(project)
    monkeypatch.setattr(orchestrate, "version_raw_data", lambda *a: pytest.fail("ran"))
    code = main(["retrain", "--env", "synthetic", "--project-dir", str(project)])
    assert code == 4, capsys.readouterr().out
    frozen = json.loads((project / STATE / "frozen_test_set.json").read_text())["test"]
    assert sorted(frozen) == ["SYN-TEST-000", "SYN-TEST-001"]


def test_without_manifest_or_reference_the_retrain_refuses_instead_of_guessing(
        project, capsys):
    _ingested_and_seen(project, capsys)
    (project / MANIFEST).unlink()
    # no reference: state written before there was one
    (project / STATE / "frozen_test_set.json").unlink(missing_ok=True)

    result = _detect(project, capsys)
    assert result["code"] == 1 and not result["retrain"], result
    assert "frozen test set of synthetic is unknown" in result["message"]
    assert "dvc checkout data_ingestion@synthetic" in result["message"]
    assert _detect(project, capsys, "--change-test-set")["retrain"]


# ------------------------------------------------------------ hostile 3: near-duplicates


def test_a_test_tile_off_by_one_grey_level_is_refused_as_training_data(project, capsys):
    _ingested_and_seen(project, capsys)
    test_tile = sorted((project / TEST_DIR).glob("*.tif"))[1]
    image = tifffile.imread(test_tile)
    tifffile.imwrite(project / TRAIN_IMAGES / "LEAK-TRAIN-000.tif", image ^ 1,
                     photometric="rgb", metadata=None)
    shutil.copy(test_tile.with_suffix(".xml"), project / TRAIN_XML / "LEAK-TRAIN-000.xml")

    result = _detect(project, capsys)
    assert result["code"] == orchestrate.EXIT_BAD_DATA == 3, result
    assert "LEAK-TRAIN-000.tif" in result["message"] and test_tile.name in result["message"]
    assert "near-duplicate of the test image" in result["message"]
    code = main(["retrain", "--env", "synthetic", "--project-dir", str(project)])
    out = capsys.readouterr().out
    assert code == 3 and "LEAK-TRAIN-000.tif" in out and test_tile.name in out, out

    # a genuinely new tile is still accepted
    for leaked in (project / RAW).rglob("LEAK-TRAIN-000.*"):
        leaked.unlink()
    assert main(["make-synthetic-data", str(project / RAW), "--add", "--prefix", "NEW",
                 "--n-train", "1", "--n-test", "0", "--image-size", "64"]) == 0
    capsys.readouterr()
    accepted = _detect(project, capsys)
    assert accepted["code"] == 0 and accepted["retrain"], accepted
    assert "1 new" in accepted["message"]
