"""``inference.outputs`` / ``--outputs`` choose the files, through the commands a user types;
the run's ``index.html`` renders in a real browser with every thumbnail."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import cv2
import pytest
from inference_helpers import BIN, command_env, he_image, kedro_inference

from sa2_pipeline.reporting.browser import check_page, find_chromium


def _inputs(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for k, (h, w) in enumerate([(96, 120), (80, 100)]):
        cv2.imwrite(str(folder / f"img{k}.png"), cv2.cvtColor(he_image(h, w, seed=k),
                                                               cv2.COLOR_RGB2BGR))
    return folder


def _cli(tiny_model, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "sa2-pipeline"), "segment", *args, "--model",
                           tiny_model.uri, "--no-progress"], env=command_env(tiny_model),
                          capture_output=True, text=True, timeout=600, check=False)


def _written(out: Path, name: str) -> set[str]:
    kinds = {"mask": f"{name}.mask.png", "ome": f"{name}.mask.ome.tif",
             "labels": f"{name}.labels.ome.tif", "geojson": f"{name}.geojson"}
    return {kind for kind, file in kinds.items() if (out / file).is_file()}


def test_cli_outputs_choose_the_files(tmp_path, tiny_model):
    inputs = _inputs(tmp_path / "in")
    default = tmp_path / "default"
    proc = _cli(tiny_model, str(inputs), "--out", str(default))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _written(default, "img0.png") == {"mask", "ome", "geojson"}  # the default
    manifest = json.loads((default / "manifest.json").read_text())
    record = manifest["inputs"]["img0.png"]
    features = json.loads((default / "img0.png.geojson").read_text())["features"]
    assert len(features) == record["object_count"] > 0
    assert {"object_density_per_mm2", "object_area_px_median", "object_area_px_q1",
            "object_area_px_q3"} <= set(record)

    chosen = tmp_path / "chosen"
    proc = _cli(tiny_model, str(inputs), "--out", str(chosen), "--outputs", "labels",
                "--outputs", "geojson")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _written(chosen, "img0.png") == {"labels", "geojson"}
    assert json.loads((chosen / "manifest.json").read_text())["settings"]["outputs"] == [
        "labels", "geojson"]

    bad = _cli(tiny_model, str(inputs), "--out", str(tmp_path / "x"), "--outputs", "svg")
    assert bad.returncode == 2 and "'svg' is not one of" in bad.stderr


def test_kedro_outputs_parameter_chooses_the_files_and_writes_the_index(tmp_path, tiny_model):
    inputs, out = _inputs(tmp_path / "in"), tmp_path / "out"
    params = (f"inference.input_dir={inputs},inference.output_dir={out},"
              f"inference.model_uri={tiny_model.uri},inference.progress=false,"
              "inference.outputs=[labels]")
    proc = kedro_inference(tiny_model, params, tmp_path / "project")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_dir = out / "sa2net-tiny-v1"
    assert _written(run_dir, "img0.png") == _written(run_dir, "img1.png") == {"labels"}
    page = (run_dir / "index.html").read_text()
    assert "img0.png.labels.ome.tif" in page and ".geojson" not in page


@pytest.mark.skipif(find_chromium() is None, reason="chromium not installed")
def test_run_index_renders_every_thumbnail_in_chromium(tmp_path, tiny_model):
    inputs, out = _inputs(tmp_path / "in"), tmp_path / "out"
    assert _cli(tiny_model, str(inputs), "--out", str(out)).returncode == 0
    page = (out / "index.html").read_text()
    for name in ("img0.png", "img1.png"):
        for file in (f"{name}.geojson", f"{name}.mask.ome.tif", f"{name}.mask.png"):
            assert f'href="{file}"' in page and (out / file).is_file()
    assert "http://" not in page and "https://" not in page  # self-contained
    check = check_page(out / "index.html")
    assert check.images == 2 and check.images_loaded == 2
    assert check.text_chars > 300
    assert check.page_width <= check.window_width


def test_killed_run_resumes_without_duplicating_objects(tmp_path, tiny_model):
    import signal
    import time

    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    for k in range(5):
        cv2.imwrite(str(folder / f"img{k}.png"), he_image(256, 256, seed=k))
    proc = subprocess.Popen([str(BIN / "sa2-pipeline"), "segment", str(folder), "--model",
                             tiny_model.uri, "--out", str(out), "--no-progress",
                             "--batch-size", "1"], env=command_env(tiny_model),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list(out.glob("records/*.json"))) < 2:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _cli(tiny_model, str(folder), "--out", str(out)).returncode == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["inputs"]) == 5
    for name, record in manifest["inputs"].items():
        features = json.loads((out / f"{name}.geojson").read_text())["features"]
        assert len(features) == len({f["id"] for f in features}) == record["object_count"]
    assert not list(out.rglob(".*.tmp")) and not list(out.glob(".pyramid-*"))
