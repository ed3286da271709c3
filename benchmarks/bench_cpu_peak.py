"""What this CPU can do at best, per precision, and what that means for a training step.

    LD_PRELOAD=libtcmalloc_minimal.so.4 python benchmarks/bench_cpu_peak.py --threads 2

Three measurements, then one bound:

1. **Instruction throughput** of one core (``isa_throughput.c``, built with the system's C
   compiler when there is one, run pinned to one core): fp32 FMA, the bf16 dot product
   (VDPBF16PS) and fp16 FMA, for the instructions /proc/cpuinfo lists.
2. **Matrix-multiply throughput** through torch (oneDNN/MKL) with ``--threads`` threads, per
   dtype: what a well-blocked kernel reaches.
3. **FLOPs of one full-model training step** (SA2-Net C = 64, 224², batch 4): three forwards
   of the batch, the forward counted by ``torch.utils.flop_counter`` (as bench_training does).

The bound: step FLOPs / best matmul throughput = the shortest step this precision can take
on this machine, whatever the implementation. It is compared with ``--release-seconds``
(the release's measured step, docs/network.md) divided by the speed-up asked for.
``--json`` writes everything to a file (benchmarks/results/ keeps this machine's).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _machine import cpu_flags  # noqa: E402  (sibling modules, not a package)
from bench_training import forward_flops, machine_info  # noqa: E402

DTYPES = ("fp32", "bf16")


def isa_throughput(iterations: int) -> dict | None:
    """Build and run isa_throughput.c on core 0; None where that is not possible here."""
    flags = cpu_flags()
    compiler = shutil.which("gcc") or shutil.which("cc")
    if platform.machine() != "x86_64" or "avx512f" not in flags or compiler is None:
        print("isa: skipped (needs x86-64 with AVX-512 and a C compiler)")
        return None
    extra = [name for name, flag in (("bf16", "avx512_bf16"), ("fp16", "avx512_fp16"))
             if flag in flags]
    with tempfile.TemporaryDirectory() as tmp:
        exe = Path(tmp) / "isa"
        build = subprocess.run([compiler, "-O2", "-mavx512f", str(HERE / "isa_throughput.c"),
                                "-o", str(exe)], check=False, capture_output=True, text=True)
        if build.returncode != 0:
            print(f"isa: skipped, {compiler} failed:\n{build.stderr.strip()}")
            return None
        command = [str(exe), str(iterations), *extra]
        if shutil.which("taskset"):
            command = ["taskset", "-c", "0", *command]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    results = {}
    for line in out.splitlines():
        name, ginstr, flop, gflops = line.split("#")[0].split()
        results[name] = {"ginstr_per_s": float(ginstr), "flop_per_instr": int(flop),
                         "gflops_per_core": float(gflops)}
    return results


def matmul_throughput(dtype_name: str, n: int, repeats: int) -> float:
    """GFLOP/s of an n x n x n matmul in this dtype (best of ``repeats`` after a warm-up)."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype_name]
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def training_step_flops(base_channels: int, size: int, batch: int) -> tuple[float, float]:
    """(forward FLOPs per image, FLOPs of one training step), as bench_training counts them.

    The backward of a convolution costs two forwards (input and weight gradients), so a step
    is three forwards of the batch; the only thing this overcounts is the first layer's
    input gradient, which is never computed. torch's FlopCounterMode is not used for the
    backward: it counts a grouped convolution's weight gradient as if the convolution were
    dense (a depthwise 64-channel 3x3 layer comes out 64x too expensive), which would put
    the full model's step at ~1.5 TFLOP instead of ~0.8.
    """
    import torch

    from sa2_pipeline.models import create_model

    model = create_model("sa2net", base_channels=base_channels)
    forward = forward_flops(model, size, torch.device("cpu"))
    return forward, 3.0 * batch * forward


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtypes", nargs="+", choices=("fp32", "bf16", "fp16"),
                        default=list(DTYPES))
    parser.add_argument("--matmul-size", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--isa-iterations", type=int, default=10_000_000,
                        help="loop trips per instruction (x16 instructions); 0 skips it")
    parser.add_argument("--base-channels", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--release-seconds", type=float, nargs=2, default=(9.0, 12.5),
                        metavar=("FAST", "SLOW"),
                        help="the release's measured step on this machine (docs/network.md)")
    parser.add_argument("--speedup", type=float, default=3.0,
                        help="speed-up over the release to test against the bound")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    report: dict = {"machine": machine_info(args.threads)}
    report["machine"]["cpu_flags_low_precision"] = sorted(
        f for f in cpu_flags() if f.startswith(("avx512_bf16", "avx512_fp16", "amx")))

    if args.isa_iterations > 0:
        report["isa_one_core"] = isa_throughput(args.isa_iterations)
        for name, row in (report["isa_one_core"] or {}).items():
            print(f"isa  {name:<14} {row['ginstr_per_s']:6.2f} G instr/s x "
                  f"{row['flop_per_instr']:>2} FLOP = {row['gflops_per_core']:7.1f} GFLOP/s "
                  f"per core")

    report["matmul_gflops"] = {}
    for name in args.dtypes:
        gflops = matmul_throughput(name, args.matmul_size, args.repeats)
        report["matmul_gflops"][name] = round(gflops, 1)
        print(f"matmul {name:<5} {args.matmul_size}^3, {args.threads} threads: "
              f"{gflops:7.1f} GFLOP/s")

    forward, step = training_step_flops(args.base_channels, args.size, args.batch)
    report["model"] = {"base_channels": args.base_channels, "size": args.size,
                       "batch": args.batch, "gmacs_forward_per_image": round(forward / 2e9, 2),
                       "gflop_training_step": round(step / 1e9, 4)}
    print(f"model  C={args.base_channels} {args.size}^2 batch {args.batch}: forward "
          f"{forward / 2e9:.2f} GMACs/image, training step {step / 1e9:.0f} GFLOP")

    fast, slow = args.release_seconds
    needed = (fast / args.speedup, slow / args.speedup)
    report["bound"] = {"release_seconds": [fast, slow], "speedup": args.speedup,
                       "step_needed_s": [round(v, 2) for v in needed], "per_dtype": {}}
    print(f"{args.speedup:g}x the release ({fast:g}-{slow:g} s) needs a step of "
          f"{needed[0]:.2f}-{needed[1]:.2f} s")
    for name, gflops in report["matmul_gflops"].items():
        floor = step / (gflops * 1e9)
        reachable = floor <= needed[1]
        report["bound"]["per_dtype"][name] = {"shortest_step_s": round(floor, 2),
                                              "reachable": reachable}
        print(f"bound  {name:<5} step >= {floor:5.2f} s at 100 % of matmul peak -> "
              f"{args.speedup:g}x {'reachable' if reachable else 'NOT reachable'}")

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(json.dumps(report, indent=2) + "\n")
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
