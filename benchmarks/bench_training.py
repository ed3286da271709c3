"""Training-step benchmark: step time, images/s, achieved TFLOP/s and peak memory.

Times the same step the engine runs (forward with deep supervision, the paper's loss over
four heads, backward, Adam) on random data, for each combination of precision, memory
format and compilation asked for, and records the machine it ran on (CPU model, family,
the flags that decide oneDNN's kernels, load average, allocator).

    python benchmarks/bench_training.py                       # full model + default config
    python benchmarks/bench_training.py --config full --precision fp32 bf16 --steps 5
    LD_PRELOAD=libtcmalloc_minimal.so.4 python benchmarks/bench_training.py --threads 2 --save
    python benchmarks/bench_training.py --config full --release /path/to/nets/sasanet.py

Figures are medians over ``--steps`` timed steps after ``--warmup`` steps. The full model is
SA2-Net at C = 64, 224², batch 4 (the paper's setting); ``default`` is conf/base's
(C = 16, 128² patches, batch 8); ``toy`` is for tests. Compare only numbers taken on the
same machine with the same allocator: glibc's malloc makes large CPU runs 2-4x noisier
(docs/environment.md).

Each combination runs in a fresh Python process (``--in-process`` turns that off), so its
peak memory is its own: on CUDA the allocator's peak (``max_memory_allocated``), on CPU the
process's peak resident set minus that of the same process before the model was built
(``baseline_rss_gib`` in the JSON: Python, torch and the imports).

``--release PATH/sasanet.py`` also builds the authors' network from that file (its
``MyNet``) and times its training step (fp32, the release's setting) in the same process,
**alternating** step by step with ours in every precision asked for, so a busy or
throttling machine slows both alike; it prints each median and the ratio release / ours.

``--save`` merges the rows into ``benchmarks/results/<machine>.json`` (the machine's slug,
e.g. ``amd-epyc-avx512bf16-f25m17``, see ``_machine.py``), replacing rows with the same
settings, so each machine keeps one file and machines sit side by side.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu_identity  # noqa: E402  (sibling module, not a package)

CONFIGS = {
    "full": {"base_channels": 64, "size": 224, "batch": 4},
    "default": {"base_channels": 16, "size": 128, "batch": 8},
    "toy": {"base_channels": 4, "size": 32, "batch": 1},
}
RESULTS_DIR = Path(__file__).resolve().parent / "results"
#: Suffix of a --precision variant that runs oneDNN's own depthwise backward (for A/B).
NATIVE_DW = "-native-dw"
PRECISIONS = ("fp32", "bf16", "fp16", "fp32-nchw-wgrad", "auto")
#: The settings that identify a row (a new row with the same values replaces the old one).
ROW_KEY = ("kind", "config", "precision", "channels_last", "compile", "threads", "allocator")


def machine_info(threads: int) -> dict:
    import torch

    preload = os.environ.get("LD_PRELOAD", "")
    info = {
        **cpu_identity(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": threads,
        "allocator": "tcmalloc" if "tcmalloc" in preload else ("jemalloc" if "jemalloc" in
                                                                preload else "glibc malloc"),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset)"),
        "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()],
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = props.name
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["cuda"] = torch.version.cuda
    return info


def forward_flops(model, size: int, device) -> float:
    """FLOPs of one evaluation-mode forward of one image (2 x MACs)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, size, size, device=device))
    model.train()
    return float(counter.get_total_flops())


def _precision_helpers():
    """``(resolve_precision, autocast)`` from wherever this checkout keeps them."""
    import importlib

    for home in ("sa2_pipeline.runtime.precision", "sa2_pipeline.inference.precision",
                 "sa2_pipeline.engine.runtime"):
        try:
            module = importlib.import_module(home)
        except ImportError:
            continue
        return module.resolve_precision, module.autocast
    raise ImportError("this checkout has no resolve_precision/autocast")


def _kernel_switches():
    """The module holding the process-wide kernel choices in this checkout."""
    try:
        from sa2_pipeline.runtime import kernels
    except ImportError:  # older checkouts kept them in models.layers
        from sa2_pipeline.models import layers as kernels
    return kernels


def random_batch(cfg: dict, channels_last: bool, device):
    import torch

    x = torch.rand(cfg["batch"], 3, cfg["size"], cfg["size"], device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = (torch.rand(cfg["batch"], 1, cfg["size"], cfg["size"], device=device) > 0.7).float()
    return x, y


def resolve_variant(variant: str, model, loss_fn, cfg: dict, channels_last: bool, device) -> str:
    """``auto`` -> the variant ``precision: auto`` picks here (measured once, then cached);
    any other name as it is."""
    if variant != "auto":
        return variant
    from sa2_pipeline.runtime.precision_probe import choose_for_training

    shape = (cfg["batch"], 3, cfg["size"], cfg["size"])
    choice = choose_for_training("auto", model, loss_fn, shape, 1, device,
                                 channels_last=channels_last)
    print(f"precision auto -> {choice.variant}", flush=True)
    return choice.variant


def make_step(model, loss_fn, variant: str, device, batch, run=None):
    """A closure running one training step of ``model`` (forward, loss, backward, Adam) in
    ``variant`` (a precision, or ``fp32-nchw-wgrad``: fp32 with the dense convolutions'
    weight gradients computed on NCHW copies, see sa2_pipeline.models.layers; a
    ``-native-dw`` suffix runs oneDNN's own depthwise backward instead of ours)."""
    import torch

    from sa2_pipeline.engine.optim import build_optimizer
    from sa2_pipeline.runtime.precision_probe import VARIANTS
    kernels = _kernel_switches()

    base, native_dw = (variant.removesuffix(NATIVE_DW), variant.endswith(NATIVE_DW))
    precision, layout = VARIANTS.get(base, (base, "native"))
    depthwise = "native" if native_dw else "conv"
    resolve_precision, autocast = _precision_helpers()
    amp = resolve_precision(precision, device)
    optimizer = build_optimizer(model, 1e-3, 0.0, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    run = model if run is None else run
    x, y = batch

    def step() -> None:
        kernels.set_weight_grad_layout(layout)
        if hasattr(kernels, "set_depthwise_backward"):  # older checkouts have one backward
            kernels.set_depthwise_backward(depthwise)
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, amp):
            out = run(x)
        loss = loss_fn(tuple(o.float() for o in out), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize()

    return step


def bench_one(cfg: dict, precision: str, channels_last: bool, compiled: bool, steps: int,
              warmup: int, device) -> dict:
    import torch

    from sa2_pipeline.losses.segmentation_loss import build_loss
    from sa2_pipeline.models import create_model

    torch.manual_seed(0)
    baseline_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    model = create_model("sa2net", base_channels=cfg["base_channels"]).to(device)
    flops_fwd = forward_flops(model, cfg["size"], device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    run = torch.compile(model) if compiled else model
    precision = resolve_variant(precision, model, build_loss(1), cfg, channels_last, device)
    step = make_step(model, build_loss(1), precision, device,
                     random_batch(cfg, channels_last, device), run=run)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = timed(step, steps, warmup)
    median = statistics.median(times)
    # A training step costs about 3x the forward (forward + 2x for the backward).
    tflops = 3 * flops_fwd * cfg["batch"] / median / 1e12
    peak = (torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20 - baseline_rss)
    return {
        "step_s": round(median, 4), "step_min_s": round(min(times), 4),
        "images_per_s": round(cfg["batch"] / median, 2), "tflops": round(tflops, 3),
        "gmacs_per_image_fwd": round(flops_fwd / 2e9, 2),
        "peak_memory_gib": round(peak, 2),
        "peak_memory_kind": ("cuda max allocated" if device.type == "cuda"
                             else "process max RSS above baseline"),
        "baseline_rss_gib": round(baseline_rss, 2),
        "variant": precision,
    }


def timed(step, steps: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


# --------------------------------------------------------------------------------------
# The release's network, alternating with ours
# --------------------------------------------------------------------------------------
def load_release(path: Path):
    """The module defined by the release's ``sasanet.py`` (imported from its path)."""
    if not path.is_file():
        raise FileNotFoundError(f"--release: {path} is not a file (the release's sasanet.py)")
    spec = importlib.util.spec_from_file_location("release_sasanet", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "MyNet"):
        raise ValueError(f"--release: {path} defines no MyNet (the release's network class)")
    return module


def release_loss(outputs, y):
    """BCE + soft Dice on each of the release's four sigmoid outputs, summed."""
    import torch.nn.functional as F

    total = 0.0
    for p in outputs:
        p = p.clamp(1e-6, 1 - 1e-6)
        dice = 1 - (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1)
        total = total + F.binary_cross_entropy(p, y) + dice
    return total


def bench_vs_release(args: argparse.Namespace, name: str, device) -> list[dict]:
    """Alternate ours (each precision) and the release (fp32) step by step; one row each."""
    import torch

    from sa2_pipeline.losses.segmentation_loss import build_loss
    from sa2_pipeline.models import create_model

    cfg, cl = CONFIGS[name], args.channels_last[0] == "on"
    torch.manual_seed(0)
    batch = random_batch(cfg, cl, device)
    ours = create_model("sa2net", base_channels=cfg["base_channels"]).to(device)
    release = load_release(args.release).MyNet(
        n_channels=3, base_channel=cfg["base_channels"], n_classes=1, img_size=cfg["size"]
    ).to(device)
    release.train()
    release_batch = batch if args.release_channels_last == "on" else (
        batch[0].contiguous(), batch[1])
    if cl:
        ours = ours.to(memory_format=torch.channels_last)
    if args.release_channels_last == "on":
        release = release.to(memory_format=torch.channels_last)
    variants = {p: resolve_variant(p, ours, build_loss(1), cfg, cl, device)
                for p in args.precision}
    steps = {f"ours-{p}": make_step(ours, build_loss(1), variants[p], device, batch)
             for p in args.precision}
    steps["release-fp32"] = make_step(release, release_loss, "fp32", device, release_batch)
    times = alternate(steps, args.steps, args.warmup)
    medians = {k: statistics.median(v) for k, v in times.items()}
    rows = []
    for precision in args.precision:
        ours_s, release_s = medians[f"ours-{precision}"], medians["release-fp32"]
        rows.append({
            "kind": "vs_release", "config": name, "precision": precision,
            "variant": variants[precision],
            "channels_last": args.channels_last[0], "compile": "off",
            "release_channels_last": args.release_channels_last, **cfg,
            "ours_step_s": round(ours_s, 6), "release_step_s": round(release_s, 6),
            "speedup_vs_release": round(release_s / ours_s, 4),
            "ours_steps_s": [round(t, 3) for t in times[f"ours-{precision}"]],
            "release_steps_s": [round(t, 3) for t in times["release-fp32"]],
        })
    return rows


def alternate(steps: dict, n: int, warmup: int) -> dict[str, list[float]]:
    """Time each closure ``n`` times, round-robin (after ``warmup`` rounds)."""
    times: dict[str, list[float]] = {k: [] for k in steps}
    for round_ in range(warmup + n):
        for key, step in steps.items():
            start = time.perf_counter()
            step()
            if round_ >= warmup:
                times[key].append(time.perf_counter() - start)
    return times


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------
def run_isolated(args: argparse.Namespace, combo: tuple[str, str, str, str]) -> dict:
    """Run one combination in a fresh interpreter and return its result row."""
    import subprocess

    name, precision, cl, comp = combo
    command = [sys.executable, __file__, "--in-process", "--config", name, "--precision",
               precision, "--channels-last", cl, "--compile", comp, "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--threads", str(args.threads), "--device",
               args.device, "--rows-only"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not rows:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"exit {done.returncode}: {tail}")
    return rows[0]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", nargs="+", default=["full", "default"], choices=CONFIGS)
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"],
                        choices=[*PRECISIONS, *(p + NATIVE_DW for p in PRECISIONS
                                                if p != "auto")],
                        help="auto: what training.precision=auto picks on this machine; "
                             f"a '{NATIVE_DW}' suffix: with oneDNN's depthwise backward")
    parser.add_argument("--channels-last", nargs="+", default=["on", "off"],
                        choices=["on", "off"])
    parser.add_argument("--compile", nargs="+", default=["off"], choices=["on", "off"])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--release", type=Path, metavar="PATH/sasanet.py",
                        help="also time the release's network from this file, alternating "
                             "with ours (first --channels-last value, no compile)")
    parser.add_argument("--release-channels-last", default="off", choices=["on", "off"],
                        help="memory format of the release's network (off: as published)")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--save", action="store_true",
                        help="merge the results into RESULTS_DIR/<machine>.json")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--in-process", action="store_true",
                        help="run every combination in this process (peak memory is then "
                             "the maximum so far, not per combination)")
    parser.add_argument("--rows-only", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def step_rows(args: argparse.Namespace, device) -> list[dict]:
    rows = []
    for combo in itertools.product(args.config, args.precision, args.channels_last,
                                   args.compile):
        name, precision, cl, comp = combo
        if precision.startswith("fp16") and device.type != "cuda":
            continue
        try:
            if args.in_process:
                r = bench_one(CONFIGS[name], precision, cl == "on", comp == "on", args.steps,
                              args.warmup, device)
                r = {"kind": "step", "config": name, "precision": precision,
                     "channels_last": cl, "compile": comp, **CONFIGS[name], **r}
            else:
                r = run_isolated(args, combo)
        except Exception as err:  # noqa: BLE001 - one failing combination is reported
            print(f"{name:8} {precision:9} {cl:7} {comp:7} failed: {err}", flush=True)
            continue
        rows.append(r)
        if args.rows_only:
            print(json.dumps(r), flush=True)
            continue
        print(f"{name:8} {precision:9} {cl:7} {comp:7} {r['step_s']:8.3f} "
              f"{r['images_per_s']:8.2f} {r['tflops']:8.3f} {r['peak_memory_gib']:9.2f}",
              flush=True)
    return rows


def merge_results(path: Path, info: dict, rows: list[dict]) -> None:
    """Merge ``rows`` into the machine file at ``path`` (same settings replace), atomically."""
    old = json.loads(path.read_text()) if path.is_file() else {"results": []}
    keyed = {tuple(r.get(k) for k in ROW_KEY): r for r in old.get("results", [])}
    for row in rows:
        keyed[tuple(row.get(k) for k in ROW_KEY)] = row
    write_json(path, {"machine": info, "results": list(keyed.values())})


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from sa2_pipeline.runtime.devices import select_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    info = machine_info(torch.get_num_threads())
    if not args.rows_only:
        print(json.dumps(info))
    if args.release is not None:
        results = []
        for name in args.config:
            for r in bench_vs_release(args, name, device):
                r.update(threads=info["threads"], allocator=info["allocator"],
                         load_average_1_5_15=[round(v, 2) for v in os.getloadavg()])
                results.append(r)
                print(f"{name:8} ours {r['precision']:5} {r['ours_step_s']:8.3f} s   release "
                      f"fp32 {r['release_step_s']:8.3f} s   release / ours = "
                      f"{r['speedup_vs_release']:.2f}x", flush=True)
    else:
        if not args.rows_only:
            print(f"{'config':8} {'precision':9} {'ch-last':7} {'compile':7} {'step s':>8} "
                  f"{'img/s':>8} {'TFLOP/s':>8} {'peak GiB':>9}")
        results = step_rows(args, device)
        for r in results:
            r.setdefault("kind", "step")
            r.update(threads=info["threads"], allocator=info["allocator"])
    if args.json:
        write_json(args.json, {"machine": info, "results": results})
    if args.save:
        merge_results(args.results_dir / f"{info['slug']}.json", info, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
