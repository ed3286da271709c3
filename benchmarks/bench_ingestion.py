"""Ingestion benchmark: MoNuSeg-format tiles read, verified and rasterised per second.

Generates ``--n-images`` RGB tiles of ``--size`` x ``--size`` pixels with their Aperio XML
polygons (the project's synthetic H&E generator, written in the MoNuSeg 2018 raw layout)
into a temporary folder -- outside the timed part -- then times
:func:`sa2_pipeline.datasets.monuseg.load_monuseg` on it (median of ``--repeats`` runs)
and prints images/s and MB/s (raw bytes on disk: TIFF + XML), with the machine it ran on.

    python benchmarks/bench_ingestion.py                    # 100 tiles of 1000x1000
    python benchmarks/bench_ingestion.py --workers 1        # in-process (no pool)
    python benchmarks/bench_ingestion.py --profile          # + where the time goes
    python benchmarks/bench_ingestion.py --data-dir /tmp/bench-monuseg   # reuse tiles
    python benchmarks/bench_ingestion.py --json results.json

Note: the synthetic tiles hold about 2,300 nuclei of ~23 vertices each per 1000x1000 tile,
about 3x the density of the real MoNuSeg tiles (21,623 nuclei over 30 tiles), so the
polygon part of the cost is an upper bound for real data.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import logging
import os
import platform
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path


def machine_info() -> dict[str, object]:
    """CPU model, cores and the versions of what ingestion runs on."""
    import numpy
    import skimage
    import tifffile
    from _machine import cpu_model

    cpu = cpu_model()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "tifffile": tifffile.__version__,
        "scikit-image": skimage.__version__,
        # other work on a shared machine slows every figure down: record how busy it was
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def generate(root: Path, n_images: int, size: int, seed: int) -> None:
    """Write ``n_images`` tiles (70 % train, 30 % test) in the MoNuSeg layout."""
    from sa2_pipeline.datasets.synthetic import generate_synthetic_monuseg

    n_test = n_images * 3 // 10
    started = time.perf_counter()
    generate_synthetic_monuseg(
        root, n_train=n_images - n_test, n_test=n_test, image_size=size, seed=seed
    )
    print(f"generated {n_images} tiles of {size}x{size} in {time.perf_counter() - started:.1f} s")


def raw_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def time_load(
    root: Path, repeats: int, workers: int | None = None
) -> tuple[list[float], list[float]]:
    """Wall-clock and this process's CPU seconds of each ``load_monuseg`` run.

    In-process (``workers=1``) CPU time is what the run costs on an idle core, and wall
    time above it means the machine was busy with other work. A pool's workers run in
    other processes: their CPU time is not counted.
    """
    from sa2_pipeline.datasets.monuseg import load_monuseg

    kwargs = {} if workers is None else {"workers": workers}
    walls, cpus = [], []
    for _ in range(repeats):
        started, cpu_started = time.perf_counter(), time.process_time()
        dataset = load_monuseg(root, **kwargs)
        walls.append(time.perf_counter() - started)
        cpus.append(time.process_time() - cpu_started)
        del dataset
    return walls, cpus


def profile_load(root: Path, top: int) -> str:
    """cProfile of one in-process run (workers=1: a pool's work is in other processes)."""
    from sa2_pipeline.datasets.monuseg import load_monuseg

    profiler = cProfile.Profile()
    profiler.enable()
    load_monuseg(root, workers=1)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).strip_dirs()
    stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-images", type=int, default=100)
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="reuse (or create) tiles here; kept"
    )
    parser.add_argument(
        "--workers", type=int, default=None,
        help="load_monuseg's worker processes (default: its own default; 1 = in-process)",
    )
    parser.add_argument("--profile", action="store_true", help="cProfile one extra run")
    parser.add_argument("--top", type=int, default=20, help="profile rows to print")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    info = machine_info()
    print("machine:", json.dumps(info))
    scratch = None
    if args.data_dir is None:
        scratch = Path(tempfile.mkdtemp(prefix="bench-ingestion-"))
        root = scratch / "monuseg"
    else:
        root = args.data_dir
    try:
        if not root.exists():
            generate(root, args.n_images, args.size, args.seed)
        n_images = len(list(root.rglob("*.tif")))
        megabytes = raw_bytes(root) / 1e6
        times, cpu_times = time_load(root, args.repeats, args.workers)
        median, cpu_median = statistics.median(times), statistics.median(cpu_times)
        result = {
            "n_images": n_images,
            "workers": args.workers,
            "size": args.size,
            "raw_mb": round(megabytes, 1),
            "runs_s": [round(t, 3) for t in times],
            "cpu_runs_s": [round(t, 3) for t in cpu_times],
            "median_s": round(median, 3),
            "images_per_s": round(n_images / median, 2),
            "mb_per_s": round(megabytes / median, 1),
            "images_per_cpu_s": round(n_images / cpu_median, 2),
            "machine": info,
        }
        workers = "default" if args.workers is None else args.workers
        print(
            f"load_monuseg(workers={workers}): {n_images} tiles ({megabytes:.0f} MB raw) "
            f"in {median:.2f} s "
            f"(median of {args.repeats}: {', '.join(f'{t:.2f}' for t in times)}) -> "
            f"{result['images_per_s']} images/s, {result['mb_per_s']} MB/s; "
            f"CPU {cpu_median:.2f} s -> {result['images_per_cpu_s']} images per CPU-second"
        )
        if args.profile:
            print(profile_load(root, args.top))
        if args.json is not None:
            args.json.write_text(json.dumps(result, indent=2) + "\n")
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
