"""The peak benchmark runs end to end at toy sizes and its bound follows from its inputs.

Timings themselves are not asserted (performance is shown by running the benchmark, not by
timed tests); what is checked is the arithmetic that turns them into a verdict.
"""

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_cpu_peak.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_cpu_peak", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_training_step_is_three_training_forwards(bench):
    forward, step = bench.training_step_flops(base_channels=4, size=32, batch=2)
    # Training and evaluation forwards differ only in the small output heads (deep
    # supervision in training, the full-resolution head in evaluation); a step is three
    # forwards of the whole batch.
    assert 0.9 * 3 * 2 * forward <= step <= 1.1 * 3 * 2 * forward


def test_report_bound_matches_matmul_throughput(bench, tmp_path):
    out = tmp_path / "peak.json"
    rc = bench.main(["--threads", "1", "--matmul-size", "64", "--repeats", "1",
                     "--isa-iterations", "1000", "--base-channels", "4", "--size", "32",
                     "--batch", "1", "--release-seconds", "0.9", "1.2", "--speedup", "3",
                     "--json", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["machine"]["threads"] == 1
    assert set(report["matmul_gflops"]) == {"fp32", "bf16"}
    step_gflop = report["model"]["gflop_training_step"]
    assert report["bound"]["step_needed_s"] == [0.3, 0.4]
    for name, gflops in report["matmul_gflops"].items():
        row = report["bound"]["per_dtype"][name]
        assert row["shortest_step_s"] == pytest.approx(step_gflop / gflops, rel=0.05, abs=0.01)
        if abs(step_gflop / gflops - 0.4) > 0.02:  # away from the rounding boundary
            assert row["reachable"] == (step_gflop / gflops < 0.4)
    isa = report.get("isa_one_core")
    if isa is not None:  # only on x86-64 with AVX-512 and a C compiler
        assert isa["fp32_fma_zmm"]["flop_per_instr"] == 32
        for row in isa.values():
            assert row["gflops_per_core"] == pytest.approx(
                row["ginstr_per_s"] * row["flop_per_instr"], rel=0.01)

