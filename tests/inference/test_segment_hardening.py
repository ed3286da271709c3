"""Hostile inputs to ``sa2-pipeline segment`` and the Kedro inference pipeline
(docs/reliability.md, "Inference"): each was a defect of an earlier version."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
from inference_helpers import he_image

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _segment(tiny_model, *args: str, umask: int | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, MLFLOW_TRACKING_URI=tiny_model.tracking_uri, OMP_NUM_THREADS="1",
               KEDRO_DISABLE_TELEMETRY="1")
    return subprocess.run([str(BIN / "sa2-pipeline"), "segment", *args, "--model",
                           tiny_model.uri, "--no-progress"], env=env, capture_output=True,
                          text=True, timeout=600, check=False,
                          preexec_fn=None if umask is None else (lambda: os.umask(umask)))


def _image(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), he_image(64, 80, seed=seed))
    return path


@pytest.mark.parametrize("value", ["0", "-0.25", "inf", "nan"])
def test_a_bad_model_mpp_is_refused_before_anything_runs(tmp_path, tiny_model, value):
    out = tmp_path / "out"
    proc = _segment(tiny_model, str(_image(tmp_path / "in" / "a.png")), "--out", str(out),
                    "--model-mpp", value)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "model_mpp" in log and "Traceback" not in log and "ZeroDivision" not in log
    assert not out.exists()  # nothing half-written, no manifest


def test_the_same_bytes_under_two_names_each_get_their_outputs(tmp_path, tiny_model):
    first = _image(tmp_path / "in" / "patientA_slide1.png")
    shutil.copy(first, tmp_path / "in" / "patientB_slide7.png")
    out = tmp_path / "out"
    proc = _segment(tiny_model, str(tmp_path / "in"), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    for name in ("patientA_slide1.png", "patientB_slide7.png"):
        assert (out / f"{name}.mask.png").is_file(), name
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["inputs"]) == ["patientA_slide1.png", "patientB_slide7.png"]
    # a rerun finds both done
    again = _segment(tiny_model, str(tmp_path / "in"), "--out", str(out))
    assert "2 already done" in again.stdout


def test_an_output_folder_inside_the_input_folder_is_not_segmented(tmp_path, tiny_model):
    folder = tmp_path / "slides"
    _image(folder / "a.png")
    out = folder / "masks"
    for _ in range(3):
        proc = _segment(tiny_model, str(folder), "--out", str(out))
        assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert list(manifest["inputs"]) == ["a.png"]
    assert sorted(p.name for p in out.glob("*.mask.png")) == ["a.png.mask.png"]


def test_a_pattern_or_folder_with_nothing_to_segment_is_an_error(tmp_path, tiny_model):
    (tmp_path / "empty").mkdir()
    for target in (str(tmp_path / "none-*.png"), str(tmp_path / "empty")):
        proc = _segment(tiny_model, target, "--out", str(tmp_path / "out"))
        assert proc.returncode == 1, proc.stdout
        assert "segmented 0" not in proc.stdout
        assert "Traceback" not in proc.stderr and target in proc.stderr


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_masks_and_records_follow_the_umask(tmp_path, tiny_model, umask):
    out = tmp_path / "out"
    proc = _segment(tiny_model, str(_image(tmp_path / "in" / "a.png")), "--out", str(out),
                    umask=umask)
    assert proc.returncode == 0, proc.stderr
    for path in (out / "a.png.mask.png", out / "manifest.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path.name


def _dead_pid() -> int:
    """A process id that no longer runs (a child that has exited)."""
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    return int(child.stdout)


def test_a_killed_pyramid_write_s_scratch_is_removed_by_the_next_write(tmp_path):
    import numpy as np

    from sa2_pipeline.inference.outputs import PNG_MAX_PIXELS, SCRATCH_PREFIX, write_mask

    stale = tmp_path / f"{SCRATCH_PREFIX}{_dead_pid()}-x1y2"
    stale.mkdir()
    (stale / "level1.raw").write_bytes(b"\0" * 1024)
    live = tmp_path / f"{SCRATCH_PREFIX}{os.getppid()}-keep"  # a running writer's
    live.mkdir()
    side = int(PNG_MAX_PIXELS ** 0.5) + 16  # just past the PNG limit: a pyramidal TIFF
    band = np.zeros((512, side), np.uint8)
    bands = ((row, band[: min(512, side - row)]) for row in range(0, side, 512))
    write_mask(tmp_path / "big.mask.tif", bands, (side, side), mpp=0.5)
    assert (tmp_path / "big.mask.tif").is_file()
    assert not stale.exists() and live.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["big.mask.tif", live.name])
