"""``precision: auto`` on the CPU: the choice rule, the measurement loop and the cache.

The timing function is a fake (a table of seconds per precision) so the choice is known;
the last tests time the real step of a tiny model only to check that probing leaves the
caller's model and random state untouched.
"""

import json
from types import SimpleNamespace

import pytest
import torch

from sa2_pipeline.runtime import precision_probe as probe

CPU = torch.device("cpu")
KEY = {"model": "SA2Net", "parameters": 1000, "input": [8, 3, 128, 128], "workload": "train"}


def fake_timer(seconds: dict[str, float], calls: list[str] | None = None):
    def time_step(precision: str) -> float:
        if calls is not None:
            calls.append(precision)
        value = seconds[precision]
        if isinstance(value, Exception):
            raise value
        return value

    return time_step


@pytest.mark.parametrize(("seconds", "winner"), [
    ({"fp32": 1.0, "bf16": 0.6}, "bf16"),    # bf16 clearly faster (Zen 4)
    ({"fp32": 1.0, "bf16": 1.6}, "fp32"),    # bf16 slower (bf16 at half the fp32 rate)
    ({"fp32": 1.0, "bf16": 0.97}, "fp32"),   # within the margin: keep the exact one
    ({"fp32": 1.0, "bf16": RuntimeError("no bf16 kernel")}, "fp32"),
])
def test_the_faster_precision_wins(tmp_path, seconds, winner):
    choice = probe.choose("auto", CPU, KEY, fake_timer(seconds), folder=tmp_path)
    assert choice.precision == winner and choice.weight_grad_layout == "native"


@pytest.mark.parametrize(("requested", "seconds", "variant"), [
    ("auto", {"fp32": 1.0, "fp32-nchw-wgrad": 0.7, "bf16": 0.8}, "fp32-nchw-wgrad"),
    ("auto", {"fp32": 1.0, "fp32-nchw-wgrad": 1.2, "bf16": 0.6}, "bf16"),
    ("fp32", {"fp32": 1.0, "fp32-nchw-wgrad": 0.7}, "fp32-nchw-wgrad"),   # AVX2-only CPU
    ("fp32", {"fp32": 1.0, "fp32-nchw-wgrad": 1.3}, "fp32"),              # AVX-512 CPU
])
def test_channels_last_training_also_chooses_the_weight_gradient_layout(
        tmp_path, requested, seconds, variant):
    calls = []
    choice = probe.choose(requested, CPU, KEY, fake_timer(seconds, calls), folder=tmp_path,
                          channels_last=True)
    assert choice.variant == variant
    assert choice == probe.RuntimeChoice.of(variant)
    assert set(calls) == set(seconds)  # only the variants that apply were timed


def test_nothing_is_measured_where_there_is_one_candidate(tmp_path):
    def never(_):
        raise AssertionError("measured")

    # bf16 asked for; fp32 inference (no weight gradients); fp32 in NCHW
    assert probe.choose("bf16", CPU, KEY, never, folder=tmp_path,
                        channels_last=True).precision == "bf16"
    assert probe.choose("fp32", CPU, KEY, never, folder=tmp_path, channels_last=True,
                        workload="infer").variant == "fp32"
    assert probe.choose("fp32", CPU, KEY, never, folder=tmp_path).variant == "fp32"


def test_a_hopeless_candidate_stops_after_its_warm_up_step():
    calls = []
    times = probe.measure(fake_timer({"fp32": 1.0, "bf16": 12.0}, calls), ("fp32", "bf16"),
                          rounds=3, warmup=1)
    assert calls == ["fp32", "bf16", "fp32", "fp32", "fp32"]
    assert times == {"fp32": [1.0, 1.0, 1.0], "bf16": [12.0]}
    assert probe.fastest(times) == "fp32"


def test_measurement_alternates_and_gives_up_on_a_clear_loser():
    calls = []
    times = probe.measure(fake_timer({"fp32": 1.0, "bf16": 3.0}, calls), ("fp32", "bf16"),
                          rounds=3, warmup=1)
    # warm-up both, then fp32/bf16 alternate until bf16's first timed step shows it loses
    assert calls == ["fp32", "bf16", "fp32", "bf16", "fp32", "fp32"]
    assert times == {"fp32": [1.0, 1.0, 1.0], "bf16": [3.0]}


def test_no_candidate_running_is_an_error():
    with pytest.raises(RuntimeError, match="no candidate could run a step"):
        probe.measure(fake_timer({"fp32": RuntimeError("x"), "bf16": RuntimeError("y")}),
                      ("fp32", "bf16"))


def test_cuda_takes_bf16_where_supported_else_fp16(monkeypatch):
    cuda = SimpleNamespace(type="cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert probe.choose("auto", cuda).precision == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert probe.choose("auto", cuda).precision == "fp16"
    assert probe.choose("fp32", cuda, channels_last=True).variant == "fp32"


def test_the_choice_is_cached_and_reused(tmp_path):
    calls = []
    first = probe.choose("auto", CPU, KEY, fake_timer({"fp32": 1.0, "bf16": 0.5},
                                                                 calls), folder=tmp_path)
    assert first.precision == "bf16" and calls
    files = list(tmp_path.glob("precision-*.json"))
    assert len(files) == 1 and not list(tmp_path.glob("*.tmp*"))
    calls.clear()
    # hit: the opposite timings are never consulted
    again = probe.choose("auto", CPU, KEY, fake_timer({"fp32": 0.5, "bf16": 1.0},
                                                                 calls), folder=tmp_path)
    assert again.precision == "bf16" and calls == []


def test_a_different_model_shape_or_torch_version_misses_the_cache(tmp_path, monkeypatch):
    flip = fake_timer({"fp32": 0.5, "bf16": 1.0})
    probe.choose("auto", CPU, KEY, fake_timer({"fp32": 1.0, "bf16": 0.5}),
                           folder=tmp_path)
    other_shape = {**KEY, "input": [4, 3, 224, 224]}
    assert probe.choose("auto", CPU, other_shape, flip, folder=tmp_path).precision == "fp32"
    real = probe.machine_key()
    monkeypatch.setattr(probe, "machine_key", lambda: {**real, "torch": "9.9.9"})
    assert probe.choose("auto", CPU, KEY, flip, folder=tmp_path).precision == "fp32"
    monkeypatch.setattr(probe, "machine_key", lambda: real)
    assert probe.choose("auto", CPU, KEY, flip, folder=tmp_path).precision == "bf16"
    assert len(list(tmp_path.glob("precision-*.json"))) == 3


def test_a_corrupt_cache_file_is_measured_again(tmp_path):
    key = {**probe.machine_key(), **KEY, "candidates": ["fp32", "bf16"]}
    probe.cache_file(key, tmp_path).parent.mkdir(parents=True, exist_ok=True)
    probe.cache_file(key, tmp_path).write_text("{not json")
    choice = probe.choose("auto", CPU, KEY, fake_timer({"fp32": 1.0, "bf16": 0.5}),
                                    folder=tmp_path)
    assert choice.precision == "bf16"
    assert probe.read_cached(key, tmp_path) == "bf16"


def test_a_read_only_cache_still_returns_the_choice(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    choice = probe.choose("auto", CPU, KEY, fake_timer({"fp32": 1.0, "bf16": 0.5}),
                                    folder=blocker / "cache")
    assert choice.precision == "bf16"


def test_the_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SA2_CACHE_DIR", str(tmp_path / "c"))
    assert probe.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("SA2_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert probe.cache_dir() == tmp_path / "x" / "sa2-pipeline"


def test_probing_the_real_step_leaves_model_and_random_state_untouched():
    from sa2_pipeline.losses.segmentation_loss import build_loss
    from sa2_pipeline.models import create_model
    from sa2_pipeline.runtime import kernels

    torch.manual_seed(0)
    model = create_model("unet", base_channels=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    layout = kernels.weight_grad_layout()  # process-wide; an earlier in-process fit may set it
    timer = probe.training_step_timer(model, build_loss(1), (1, 3, 32, 32), 1, CPU,
                                      channels_last=True)
    for variant in ("fp32", "fp32-nchw-wgrad", "bf16"):
        assert timer(variant) > 0
    assert kernels.weight_grad_layout() == layout
    forward = probe.forward_timer(model, (1, 3, 32, 32), CPU)
    assert forward("fp32") > 0 and model.training
    assert torch.equal(torch.get_rng_state(), rng)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    key = probe.probe_key(model, (1, 3, 32, 32), "train", channels_last=True)
    assert key["parameters"] == sum(p.numel() for p in model.parameters())
    assert key["workload"] == "train" and key["threads"] == torch.get_num_threads()


def test_choosing_for_training_applies_the_layout_and_caches(tmp_path):
    from sa2_pipeline.losses.segmentation_loss import build_loss
    from sa2_pipeline.models import create_model
    from sa2_pipeline.runtime import kernels

    model = create_model("unet", base_channels=4).to(memory_format=torch.channels_last)
    try:
        choice = probe.choose_for_training("fp32", model, build_loss(1), (1, 3, 32, 32), 1,
                                           CPU, channels_last=True, folder=tmp_path)
        assert choice.precision == "fp32"
        assert kernels.weight_grad_layout() == choice.weight_grad_layout
        record = json.loads(next(tmp_path.glob("precision-*.json")).read_text())
        assert record["choice"] == choice.variant
        assert set(record["median_step_s"]) <= {"fp32", "fp32-nchw-wgrad"}
        assert record["key"]["workload"] == "train" and record["key"]["input"] == [1, 3, 32, 32]
    finally:
        kernels.set_weight_grad_layout("native")
    assert probe.choose_for_inference("auto", model, (1, 3, 32, 32), CPU,
                                      folder=tmp_path) in ("fp32", "bf16")


def test_two_generations_sharing_one_model_name_do_not_share_a_cache_entry(tmp_path,
                                                                            monkeypatch):
    """"AMD EPYC" names a Zen 4 and a Zen 5 alike; a home directory shared by mixed nodes
    must measure each generation, not reuse the other's answer."""
    def cpuinfo(family, model):
        return (f"processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: {family}\n"
                f"model\t\t: {model}\nmodel name\t: AMD EPYC\nstepping\t: 1\n"
                "flags\t\t: fpu avx2 avx512f avx512_bf16\n")

    zen4, zen5 = probe.machine_key(cpuinfo(25, 17)), probe.machine_key(cpuinfo(26, 2))
    assert zen4["cpu"] == zen5["cpu"] == "AMD EPYC"
    assert zen4["cpu_generation"] == "25/17/1" and zen5["cpu_generation"] == "26/2/1"
    monkeypatch.setattr(probe, "machine_key", lambda: zen5)
    probe.choose("auto", CPU, KEY, fake_timer({"fp32": 1.0, "bf16": 0.5}), folder=tmp_path)
    monkeypatch.setattr(probe, "machine_key", lambda: zen4)
    assert probe.choose("auto", CPU, KEY, fake_timer({"fp32": 0.5, "bf16": 1.0}),
                        folder=tmp_path).precision == "fp32"
    assert len(list(tmp_path.glob("precision-*.json"))) == 2


def test_the_choice_follows_the_fastest_steps_not_a_slowdown_in_two_rounds():
    # Measured on a Zen 4: the machine slowed during rounds 2 and 3. By medians the NCHW
    # variant won (0.754 < 0.95 x 0.802); its real step is slower (0.650 against 0.608 s).
    noisy = {"fp32": [0.659, 0.817, 0.802], "fp32-nchw-wgrad": [0.681, 0.874, 0.754]}
    assert probe.fastest(noisy) == "fp32"
    # a variant faster in every round is still chosen, beyond the margin only
    assert probe.fastest({"fp32": [1.0, 1.2, 1.1], "bf16": [0.6, 0.9, 0.7]}) == "bf16"
    assert probe.fastest({"fp32": [1.0, 1.2, 1.1], "bf16": [0.97, 0.98, 0.99]}) == "fp32"
