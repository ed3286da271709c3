"""The training benchmark runs end to end at toy size, against a stand-in "release" module.

The stand-in is written by the test (a tiny network with the release's constructor and
training-mode outputs: four sigmoid maps); the real release file is never used here.
Timings are not asserted, only what the benchmark derives from them and where it stores it.
"""

import importlib.util
import json
import statistics
import textwrap
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_training.py"

FAKE_RELEASE = textwrap.dedent('''
    import torch
    from torch import nn


    class MyNet(nn.Module):
        def __init__(self, n_channels=3, base_channel=64, n_classes=1, img_size=224):
            super().__init__()
            self.conv = nn.Conv2d(n_channels, base_channel, 3, padding=1)
            self.heads = nn.ModuleList(nn.Conv2d(base_channel, n_classes, 1) for _ in range(4))

        def forward(self, x):
            h = torch.relu(self.conv(x.float()))
            outs = tuple(torch.sigmoid(head(h)) for head in self.heads)
            return outs if self.training else outs[0]
''')


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_training", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_release_mode_alternates_and_saves_per_machine(bench, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SA2_CACHE_DIR", str(tmp_path / "cache"))
    release = tmp_path / "sasanet.py"
    release.write_text(FAKE_RELEASE)
    results = tmp_path / "results"
    rc = bench.main(["--config", "toy", "--precision", "fp32", "auto", "--channels-last", "on",
                     "--steps", "3", "--warmup", "1", "--threads", "1", "--device", "cpu",
                     "--release", str(release), "--save", "--results-dir", str(results)])
    assert rc == 0
    files = list(results.glob("*.json"))
    assert len(files) == 1
    saved = json.loads(files[0].read_text())
    machine = saved["machine"]
    assert files[0].stem == machine["slug"]
    assert machine["cpu"] and machine["isa_level"] in machine["slug"]
    assert len(machine["load_average_1_5_15"]) == 3
    rows = saved["results"]
    assert [r["precision"] for r in rows] == ["fp32", "auto"]
    # auto ran as the variant measured (and cached) for this machine and model
    cached = json.loads(next((tmp_path / "cache").glob("precision-*.json")).read_text())
    assert rows[1]["variant"] == cached["choice"]
    assert rows[0]["variant"] == "fp32"
    for row in rows:
        assert row["kind"] == "vs_release" and row["config"] == "toy"
        assert len(row["ours_steps_s"]) == len(row["release_steps_s"]) == 3
        assert row["ours_step_s"] == pytest.approx(statistics.median(row["ours_steps_s"]),
                                                   abs=1e-3)
        assert row["speedup_vs_release"] == pytest.approx(
            row["release_step_s"] / row["ours_step_s"], rel=1e-2)
    # Both precisions were timed against the same release steps (one alternating loop).
    assert rows[0]["release_steps_s"] == rows[1]["release_steps_s"]
    printed = capsys.readouterr().out
    assert printed.count("release / ours =") == 2


def test_save_replaces_rows_with_the_same_settings_and_keeps_others(bench, tmp_path):
    path = tmp_path / "m.json"
    base = {"kind": "step", "config": "toy", "channels_last": "on", "compile": "off",
            "threads": 1, "allocator": "glibc malloc"}
    bench.merge_results(path, {"cpu": "x"}, [{**base, "precision": "fp32", "step_s": 1.0},
                                             {**base, "precision": "bf16", "step_s": 2.0}])
    bench.merge_results(path, {"cpu": "y"}, [{**base, "precision": "fp32", "step_s": 0.5}])
    saved = json.loads(path.read_text())
    assert saved["machine"] == {"cpu": "y"}
    assert {r["precision"]: r["step_s"] for r in saved["results"]} == {"fp32": 0.5, "bf16": 2.0}


def test_a_release_file_without_the_network_class_is_named(bench, tmp_path):
    wrong = tmp_path / "other.py"
    wrong.write_text("x = 1\n")
    with pytest.raises(ValueError, match=r"other\.py defines no MyNet"):
        bench.load_release(wrong)
    with pytest.raises(FileNotFoundError, match="missing.py is not a file"):
        bench.load_release(tmp_path / "missing.py")


def test_machine_slug_separates_cpus_sharing_a_name():
    spec = importlib.util.spec_from_file_location("_machine", BENCH.parent / "_machine.py")
    machine = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(machine)
    avx512 = {"avx2", "fma", "avx512f", "avx512_bf16"}
    zen3 = machine.machine_slug("AMD EPYC", {"avx2", "fma"}, ("25", "1"))
    zen4 = machine.machine_slug("AMD EPYC", avx512, ("25", "17"))
    zen5 = machine.machine_slug("AMD EPYC", avx512, ("26", "2"))
    assert (zen3, zen4, zen5) == ("amd-epyc-avx2-f25m1", "amd-epyc-avx512bf16-f25m17",
                                  "amd-epyc-avx512bf16-f26m2")
    assert machine.machine_slug("Intel(R) Xeon(R) Platinum 8480+ CPU @ 2.0GHz",
                                {"avx512f", "avx512_bf16", "amx_bf16"}, (None, None)) == (
        "intel-xeon-platinum-8480-amx")


def test_a_native_dw_variant_runs_onednns_depthwise_backward_and_the_plain_one_ours(bench):
    import torch

    from sa2_pipeline.losses.segmentation_loss import build_loss
    from sa2_pipeline.models import create_model, layers
    from sa2_pipeline.runtime import kernels

    cfg = bench.CONFIGS["toy"]
    model = create_model("sa2net", base_channels=cfg["base_channels"])
    batch = bench.random_batch(cfg, False, torch.device("cpu"))
    calls = []
    original = layers._DepthwiseConv.apply

    def spy(*args):
        calls.append(kernels.depthwise_backward())
        return original(*args)

    layers._DepthwiseConv.apply = spy
    try:
        for variant, expected in (("fp32-native-dw", "native"), ("fp32", "conv")):
            calls.clear()
            bench.make_step(model, build_loss(1), variant, torch.device("cpu"), batch)()
            assert kernels.depthwise_backward() == expected
            # our backward runs only when it is the one chosen
            assert bool(calls) == (expected == "conv")
    finally:
        del layers._DepthwiseConv.apply
        kernels.set_depthwise_backward("conv")
    with pytest.raises(ValueError, match="depthwise backward must be one of"):
        kernels.set_depthwise_backward("fast")
