"""Training-step benchmark: step time, images/s, achieved TFLOP/s and peak memory.

Times the same step the engine runs (forward with deep supervision, the paper's loss over
four heads, backward, Adam) on random data, for each combination of precision, memory
format and compilation asked for, and records the machine it ran on.

    python benchmarks/bench_training.py                       # full model + default config
    python benchmarks/bench_training.py --config full --precision fp32 bf16 --steps 5
    LD_PRELOAD=libtcmalloc_minimal.so.4 python benchmarks/bench_training.py --threads 2

Figures are medians over ``--steps`` timed steps after ``--warmup`` steps. The full model is
SA2-Net at C = 64, 224², batch 4 (the paper's setting); ``default`` is conf/base's
(C = 16, 128² patches, batch 8). Compare only numbers taken on the same machine with the
same allocator: glibc's malloc makes large CPU runs 2-4x noisier (docs/environment.md).

Each combination runs in a fresh Python process (``--in-process`` turns that off), so its
peak memory is its own: on CUDA the allocator's peak (``max_memory_allocated``), on CPU the
process's peak resident set minus that of the same process before the model was built
(``baseline_rss_gib`` in the JSON: Python, torch and the imports).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

CONFIGS = {
    "full": {"base_channels": 64, "size": 224, "batch": 4},
    "default": {"base_channels": 16, "size": 128, "batch": 8},
}


def machine_info(threads: int) -> dict:
    import torch
    from _machine import cpu_model

    cpu = cpu_model()
    preload = os.environ.get("LD_PRELOAD", "")
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": threads,
        "allocator": "tcmalloc" if "tcmalloc" in preload else ("jemalloc" if "jemalloc" in
                                                                preload else "glibc malloc"),
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


def bench_one(cfg: dict, precision: str, channels_last: bool, compiled: bool, steps: int,
              warmup: int, device) -> dict:
    import torch

    from sa2_pipeline.engine.optim import build_optimizer
    from sa2_pipeline.engine.runtime import autocast, resolve_precision
    from sa2_pipeline.losses.segmentation_loss import build_loss
    from sa2_pipeline.models import create_model

    torch.manual_seed(0)
    baseline_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    model = create_model("sa2net", base_channels=cfg["base_channels"]).to(device)
    flops_fwd = forward_flops(model, cfg["size"], device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    loss_fn = build_loss(1)
    optimizer = build_optimizer(model, 1e-3, 0.0, device)
    amp = resolve_precision(precision, device)
    run = torch.compile(model) if compiled else model
    x = torch.rand(cfg["batch"], 3, cfg["size"], cfg["size"], device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = (torch.rand(cfg["batch"], 1, cfg["size"], cfg["size"], device=device) > 0.7).float()
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, amp):
            out = run(x)
        loss = loss_fn(tuple(o.float() for o in out), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(warmup):
        step()
    sync()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
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
    }


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", nargs="+", default=["full", "default"], choices=CONFIGS)
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"],
                        choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--channels-last", nargs="+", default=["on", "off"],
                        choices=["on", "off"])
    parser.add_argument("--compile", nargs="+", default=["off"], choices=["on", "off"])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--in-process", action="store_true",
                        help="run every combination in this process (peak memory is then "
                             "the maximum so far, not per combination)")
    parser.add_argument("--rows-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    import torch

    from sa2_pipeline.engine.runtime import select_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    info = machine_info(torch.get_num_threads())
    results = []
    if not args.rows_only:
        print(json.dumps(info))
        print(f"{'config':8} {'precision':9} {'ch-last':7} {'compile':7} {'step s':>8} "
              f"{'img/s':>8} {'TFLOP/s':>8} {'peak GiB':>9}")
    for combo in itertools.product(args.config, args.precision, args.channels_last,
                                   args.compile):
        name, precision, cl, comp = combo
        if precision == "fp16" and device.type != "cuda":
            continue
        try:
            if args.in_process:
                r = bench_one(CONFIGS[name], precision, cl == "on", comp == "on", args.steps,
                              args.warmup, device)
                r = {"config": name, "precision": precision, "channels_last": cl,
                     "compile": comp, **CONFIGS[name], **r}
            else:
                r = run_isolated(args, combo)
        except Exception as err:  # noqa: BLE001 - one failing combination is reported
            print(f"{name:8} {precision:9} {cl:7} {comp:7} failed: {err}", flush=True)
            continue
        results.append(r)
        if args.rows_only:
            print(json.dumps(r), flush=True)
            continue
        print(f"{name:8} {precision:9} {cl:7} {comp:7} {r['step_s']:8.3f} "
              f"{r['images_per_s']:8.2f} {r['tflops']:8.3f} {r['peak_memory_gib']:9.2f}",
              flush=True)
    if args.json:
        out = Path(args.json)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps({"machine": info, "results": results}, indent=2) + "\n")
        os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
