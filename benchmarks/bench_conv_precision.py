"""Single-convolution forward + backward time by precision, at SA2-Net's shapes.

Shows whether bf16 can pay off on this machine before tuning a model for it:

    LD_PRELOAD=libtcmalloc_minimal.so.4 python benchmarks/bench_conv_precision.py

For each layer shape it prints the best of 3 timed steps (after one warm-up) in fp32,
bf16 autocast (fp32 weights, as training with ``precision: bf16`` runs) and pure bf16
(bf16 weights and activations), channels-last, batch 4.
"""

from __future__ import annotations

import argparse
import time

# (kernel, groups, channels, side): the dense 3x3 at full resolution and at 1/4, and the
# depthwise 5x5 of the SA2 module's mixed-scale feed-forward blocks.
SHAPES = ((3, 1, 64, 224), (3, 1, 256, 56), (5, 256, 256, 56))


def step_time(mode: str, kernel: int, groups: int, channels: int, side: int) -> float:
    import torch

    conv = torch.nn.Conv2d(channels, channels, kernel, padding=kernel // 2, groups=groups)
    conv = conv.to(memory_format=torch.channels_last)
    x = torch.randn(4, channels, side, side).contiguous(memory_format=torch.channels_last)
    if mode == "pure-bf16":
        conv, x = conv.to(torch.bfloat16), x.to(torch.bfloat16)
    x.requires_grad_(True)
    times = []
    for _ in range(4):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "autocast-bf16"):
            y = conv(x)
        y.float().sum().backward()
        times.append(time.perf_counter() - start)
    return min(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"oneDNN ISA: {torch.backends.cpu.get_cpu_capability()}")
    print(f"{'kernel':>6} {'groups':>6} {'C':>4} {'side':>4}  {'fp32':>7} {'autocast':>9} "
          f"{'pure-bf16':>9}  (seconds, forward + backward)")
    for shape in SHAPES:
        fp32, auto, pure = (step_time(m, *shape) for m in ("fp32", "autocast-bf16", "pure-bf16"))
        print(f"{shape[0]:>6} {shape[1]:>6} {shape[2]:>4} {shape[3]:>4}  {fp32:7.3f} "
              f"{auto:9.3f} {pure:9.3f}")


if __name__ == "__main__":
    main()
