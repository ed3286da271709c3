"""The slide path overlaps its parts: tiles are read one row ahead of the network, and
what a band feeds (objects, files) runs beside the network, not after it.

No test here times anything: each one makes a stage *wait for* evidence that the other
stage already ran ahead, with a generous timeout, so a serial path fails (by timing out
on the event) and an overlapped one passes whatever the machine's speed.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import tifffile
import torch
from inference_helpers import he_image, tiny_bundle
from torch import nn

from sa2_pipeline.config import InferenceConfig
from sa2_pipeline.inference.streaming import WindowSpec, stream_probabilities

WAIT_S = 20


def _conv():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 1, 3, padding=1)).eval()


def test_the_next_row_of_tiles_is_read_while_the_network_runs():
    model = _conv()
    image = np.random.default_rng(0).integers(0, 256, (256, 200, 3), dtype=np.uint8)
    second_row_read = threading.Event()
    readers: set[str] = set()
    waited: list[bool] = []

    def read(x, y, w, h):
        readers.add(threading.current_thread().name)
        if y > 0:
            second_row_read.set()
        return image[y : y + h, x : x + w]

    def forward(tiles):
        if not waited:  # the first batch: the reader must already be on the next row
            waited.append(second_row_read.wait(WAIT_S))
        return torch.sigmoid(model(tiles))

    spec = WindowSpec(patch=64, overlap=0.5, batch_size=64, border=0)
    bands = list(stream_probabilities(read, (200, 256), forward, spec))
    assert waited == [True], "the next row was not read while the network ran"
    assert threading.current_thread().name not in readers  # decoding left the main thread
    assert sum(b.shape[1] for _, b in bands) == 256


def test_a_read_error_in_the_reader_thread_reaches_the_caller():
    def read(x, y, w, h):
        if y > 0:
            raise OSError("tile 3 of slide.svs: JPEG data is corrupt")
        return np.zeros((h, w, 3), dtype=np.uint8)

    spec = WindowSpec(patch=64, overlap=0.5, batch_size=4, border=0)
    with pytest.raises(OSError, match="tile 3 of slide.svs"):
        list(stream_probabilities(read, (64, 256), lambda t: torch.zeros(
            t.shape[0], 1, 64, 64), spec))


def _slide(path):
    image = he_image(512, 384, seed=5)
    tifffile.imwrite(path, image, tile=(128, 128), photometric="rgb",
                     resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER")
    return path


def test_objects_are_cut_while_the_network_runs_on_the_next_rows(tmp_path, monkeypatch):
    from sa2_pipeline.inference import segment
    from sa2_pipeline.inference.predict import Predictor

    rows_done = []
    more_rows = threading.Event()
    first_band_waited: list[bool] = []
    original_add = segment.InstanceStream.add

    def add(self, first, *args, **kwargs):
        if not first_band_waited:  # the first band: the network must go on meanwhile
            first_band_waited.append(more_rows.wait(WAIT_S))
        return original_add(self, first, *args, **kwargs)

    def on_row(done, total):
        rows_done.append(done)
        if done >= 3:
            more_rows.set()

    monkeypatch.setattr(segment.InstanceStream, "add", add)
    predictor = Predictor(tiny_bundle(), device=torch.device("cpu"))
    settings = InferenceConfig(model_mpp=0.5, progress=False, patch_size=64, overlap=0.5)
    record = segment.segment_file(_slide(tmp_path / "s.tif"), predictor, settings,
                                  tmp_path / "out", "s", on_row=on_row)
    assert first_band_waited == [True], "the network waited for the objects of a band"
    assert record["object_count"] > 0 and rows_done[-1] > 3


def test_an_error_while_writing_objects_stops_the_slide_and_leaves_no_file(tmp_path,
                                                                           monkeypatch):
    from sa2_pipeline.inference import segment
    from sa2_pipeline.inference.predict import Predictor

    def broken(self, objects):
        raise OSError("No space left on device: s.geojson")

    monkeypatch.setattr(segment._ObjectSink, "add", broken)
    predictor = Predictor(tiny_bundle(), device=torch.device("cpu"))
    settings = InferenceConfig(model_mpp=0.5, progress=False, patch_size=64,
                               outputs=("mask", "geojson"))
    with pytest.raises(OSError, match="No space left on device"):
        segment.segment_file(_slide(tmp_path / "s.tif"), predictor, settings,
                             tmp_path / "out", "s")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == []
