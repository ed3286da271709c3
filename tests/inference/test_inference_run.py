"""Segmenting folders: the Kedro ``inference`` pipeline and ``sa2-pipeline segment``.

Both go through :func:`sa2_pipeline.inference.run.segment_inputs`; each option is tested
through the command a user types.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from inference_helpers import BIN, command_env, he_image, kedro_inference


def _inputs(folder: Path) -> None:
    """Two good images (PNG and TIFF of the same stem), a pyramidal JPEG slide, bad ones."""
    folder.mkdir(parents=True, exist_ok=True)
    image = he_image(96, 120)
    cv2.imwrite(str(folder / "a.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    tifffile.imwrite(folder / "a.tif", image[:80], photometric="rgb")
    slide = he_image(300, 420, seed=1)
    with tifffile.TiffWriter(folder / "slide.tif") as tif:
        tif.write(slide, tile=(128, 128), compression="jpeg", photometric="rgb", subifds=1,
                  resolution=(2e4, 2e4), resolutionunit="CENTIMETER")
        tif.write(slide[::2, ::2], tile=(128, 128), compression="jpeg", photometric="rgb",
                  subfiletype=1)
    (folder / "empty.png").write_bytes(b"")
    (folder / "corrupt.tif").write_bytes(b"II*\x00" + b"\x00" * 64)
    cv2.imwrite(str(folder / "tiny.png"), np.zeros((8, 8, 3), np.uint8))
    (folder / "notes.svslide").write_text("not a slide")


def test_kedro_inference_pipeline_segments_reports_and_resumes(tmp_path, tiny_model):
    inputs, out = tmp_path / "in", tmp_path / "out"
    _inputs(inputs)
    params = (f"inference.input_dir={inputs},inference.output_dir={out},"
              f"inference.model_uri={tiny_model.uri},inference.progress=false")
    proc = kedro_inference(tiny_model, params, tmp_path / "project")
    log = proc.stdout + proc.stderr
    # four bad inputs: the exit status is their number; the good ones are all done
    assert proc.returncode == 4, log
    assert "(automatic)" in log  # inference.num_threads: 0 by default
    for name, reason in (("empty.png", "empty file"), ("corrupt.tif", "unreadable"),
                         ("tiny.png", "too small"), ("notes.svslide", "OpenSlide")):
        assert name in log and reason in log, (name, log[-3000:])
    run_dir = out / "sa2net-tiny-v1"  # champion resolved to version 1
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["model"]["version"] == "1"
    assert manifest["model"]["requested_uri"] == tiny_model.uri
    assert sorted(r["name"] for r in manifest["inputs"].values()) == ["a.png", "a.tif",
                                                                      "slide.tif"]
    assert sorted(manifest["failed"]) == ["corrupt.tif", "empty.png", "notes.svslide",
                                          "tiny.png"]
    a_png = cv2.imread(str(run_dir / "a.png.mask.png"), cv2.IMREAD_UNCHANGED)
    a_tif = cv2.imread(str(run_dir / "a.tif.mask.png"), cv2.IMREAD_UNCHANGED)
    assert a_png.shape == (96, 120) and a_tif.shape == (80, 120)  # no overwrite
    slide_mask = cv2.imread(str(run_dir / "slide.tif.mask.png"), cv2.IMREAD_UNCHANGED)
    assert slide_mask.shape == (300, 420)
    summary = (run_dir / "slide.tif.csv").read_text().splitlines()
    assert summary[0].startswith("width,height,level") and len(summary) == 2
    assert (run_dir / "slide.tif.overlay.png").is_file()
    objects = (run_dir / "slide.tif.objects.csv").read_text().splitlines()
    assert objects[0] == "object,area_px,area_um2"

    # unchanged re-run: nothing redone; a changed threshold redoes every input
    stamp = (run_dir / "a.png.mask.png").stat().st_mtime_ns
    again = kedro_inference(tiny_model, params + ",inference.num_threads=1", tmp_path / "project")
    assert again.returncode == 4
    assert "torch uses 1 thread(s)" in again.stdout + again.stderr  # inference.num_threads
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert sorted(manifest["this_run"]["skipped"]) == ["a.png", "a.tif", "slide.tif"]
    assert (run_dir / "a.png.mask.png").stat().st_mtime_ns == stamp
    third = kedro_inference(tiny_model, params + ",inference.threshold=0.9", tmp_path / "project")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert third.returncode == 4 and sorted(manifest["this_run"]["done"]) == [
        "a.png", "a.tif", "slide.tif"]
    high = cv2.imread(str(run_dir / "a.png.mask.png"), cv2.IMREAD_UNCHANGED)
    assert (high > 0).sum() < (a_png > 0).sum()  # a higher threshold: less foreground


def test_kedro_parts_split_the_inputs(tmp_path, tiny_model):
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    for k in range(3):
        cv2.imwrite(str(inputs / f"img{k}.png"), he_image(64, 64, seed=k))
    params = (f"inference.input_dir={inputs},inference.output_dir={out},"
              f"inference.model_uri={tiny_model.uri},inference.progress=false,"
              "inference.num_parts=2,inference.part_id=1")
    proc = kedro_inference(tiny_model, params, tmp_path / "project")
    assert proc.returncode == 0, proc.stderr[-3000:]
    done = sorted(p.name for p in (out / "sa2net-tiny-v1").glob("*.mask.png"))
    assert done == ["img1.png.mask.png"]  # sorted names, every 2nd from index 1


def _cli(tiny_model, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "sa2-pipeline"), "segment", *args, "--model",
                           tiny_model.uri], env=command_env(tiny_model), capture_output=True,
                          text=True, timeout=600, check=False, **kwargs)


def test_cli_segments_files_folders_and_globs(tmp_path, tiny_model):
    folder = tmp_path / "in"
    _inputs(folder)
    planar = tmp_path / "planar.tif"
    tifffile.imwrite(planar, he_image(64, 72).transpose(2, 0, 1).copy(),
                     photometric="minisblack")
    out = tmp_path / "out"
    proc = _cli(tiny_model, str(folder / "a.*"), str(planar), str(tmp_path / "missing.png"),
                "--out", str(out), "--threshold", "0.3", "--no-progress")
    log = proc.stdout + proc.stderr
    assert proc.returncode == 1, log  # the missing file
    assert "missing.png: no such file" in log and "unreadable" not in log
    assert cv2.imread(str(out / "a.png.mask.png"), 0).shape == (96, 120)
    assert cv2.imread(str(out / "a.tif.mask.png"), 0).shape == (80, 120)
    # channels-first TIFF: a mask of the image's true size (64 x 72), not 3 x 64
    assert cv2.imread(str(out / "planar.tif.mask.png"), 0).shape == (64, 72)
    record = json.loads((out / "manifest.json").read_text())
    assert record["settings"]["threshold"] == 0.3

    folder_out = tmp_path / "out2"
    proc = _cli(tiny_model, str(folder), "--out", str(folder_out), "--no-progress")
    assert proc.returncode == 4  # the four bad inputs of _inputs
    assert (folder_out / "slide.tif.mask.png").is_file()


def test_cli_threshold_and_tta_change_the_mask(tmp_path, tiny_model):
    image = tmp_path / "img.png"
    cv2.imwrite(str(image), he_image(96, 96, seed=3))
    masks = {}
    for label, extra in (("default", []), ("low", ["--threshold", "0.2"]), ("tta", ["--tta"])):
        out = tmp_path / label
        assert _cli(tiny_model, str(image), "--out", str(out), "--no-progress",
                    *extra).returncode == 0
        masks[label] = cv2.imread(str(out / "img.png.mask.png"), 0)
    assert (masks["low"] > 0).sum() > (masks["default"] > 0).sum()
    assert (masks["tta"] != masks["default"]).any()


def test_killed_run_resumes_without_redoing_finished_inputs(tmp_path, tiny_model):
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    for k in range(6):
        cv2.imwrite(str(folder / f"img{k}.png"), he_image(320, 320, seed=k))
    proc = subprocess.Popen([str(BIN / "sa2-pipeline"), "segment", str(folder), "--model",
                             tiny_model.uri, "--out", str(out), "--no-progress",
                             "--batch-size", "1"],
                            env=command_env(tiny_model), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    records = out / "records"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list(records.glob("*.json"))) < 2:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {json.loads(p.read_text())["name"] for p in records.glob("*.json")}
    assert 2 <= len(finished) < 6
    stamps = {n: (out / f"{n}.mask.png").stat().st_mtime_ns for n in finished}
    resumed = _cli(tiny_model, str(folder), "--out", str(out), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["this_run"]["skipped"]) == sorted(finished)
    assert len(manifest["this_run"]["done"]) == 6 - len(finished)
    assert {n: (out / f"{n}.mask.png").stat().st_mtime_ns for n in finished} == stamps
    assert not list(out.rglob(".*.tmp"))


def test_cli_refuses_two_inputs_with_the_same_output_name(tmp_path, tiny_model):
    for sub in ("x", "y"):
        (tmp_path / sub).mkdir()
        cv2.imwrite(str(tmp_path / sub / "a.png"), he_image(64, 64))
    proc = _cli(tiny_model, str(tmp_path / "x" / "a.png"), str(tmp_path / "y" / "a.png"),
                "--out", str(tmp_path / "out"))
    assert proc.returncode != 0 and "would both write outputs named 'a.png'" in (
        proc.stdout + proc.stderr)


@pytest.mark.parametrize("bad", ["zero", "corrupt"])
def test_library_reports_bad_inputs_by_name(tmp_path, bad):
    from sa2_pipeline.config import InferenceConfig
    from sa2_pipeline.inference.run import collect_inputs, segment_inputs

    path = tmp_path / "x.tif"
    path.write_bytes(b"" if bad == "zero" else b"MM\x00*garbage")
    result = segment_inputs(collect_inputs([path]), predictor=None,
                            settings=InferenceConfig(), out_dir=tmp_path / "o",
                            model={"name": "m"}, progress=False)
    assert list(result.failed) == ["x.tif"] and result.exit_code == 1
