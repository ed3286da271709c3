"""Inference benchmark: tile speed against MONAI, and whole-slide memory and throughput.

**Tile speed** (``--tile``): images/s for one ``--tile-size`` (1000) square RGB tile through
the same SA2-Net (``--base`` channels, random weights, eval mode), once with this project's
sliding window (:func:`sa2_pipeline.inference.sliding_window.predict_sliding_window`) and
once with MONAI's ``sliding_window_inference``, both with the same patch (256), overlap 0.5,
Gaussian weights (sigma = patch / 8: MONAI's ``sigma_scale=0.125``) and batch size. The two
alternate in one process (ours, MONAI, ours, MONAI...) so machine noise hits both alike;
the median of ``--repeats`` rounds and the ratio (MONAI time / ours) are reported, per
precision (``fp32``, ``bf16`` autocast; on CUDA also ``fp16``). Needs the ``bench`` extra
(``pip install -e ".[bench]"``).

**Whole slide** (``--slide``): generates a ``--slide-size`` (20,000) square, JPEG-compressed,
tiled pyramidal TIFF with about 40 % tissue (a stained disc on white glass; generated tile
by tile, never held whole), then segments it in a *child process* through the library
function the Kedro pipeline and the CLI use
(:func:`sa2_pipeline.inference.segment.segment_file`) and reports its wall time, slides/hour
and peak RSS. Peak RSS is the child's ``ru_maxrss`` from
``resource.getrusage(RUSAGE_CHILDREN)`` after it exits (kilobytes on Linux): the maximum
resident set of that process alone, including the interpreter, torch and the model.

    python benchmarks/bench_inference.py --tile --precisions fp32 bf16 --threads 2
    python benchmarks/bench_inference.py --slide --slide-model unet --slide-base 8
    python benchmarks/bench_inference.py --tile --profile         # where our time goes

Results are written as JSON under ``benchmarks/results/`` (``--json``).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def machine_info() -> dict[str, object]:
    import torch

    sys.path.insert(0, str(HERE))
    from _machine import cpu_model

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def build_model(name: str, base: int, device):
    from sa2_pipeline.models import create_model

    model = create_model(name, in_channels=3, num_classes=1, base_channels=base)
    return model.eval().to(device)


def _time(fn) -> float:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def tile_speed(args: argparse.Namespace, device) -> list[dict[str, object]]:
    """Ours against MONAI on one tile, alternating, per precision."""
    import torch
    from monai.inferers import sliding_window_inference

    from sa2_pipeline.inference.sliding_window import predict_sliding_window

    model = build_model("sa2net", args.base, device)
    image = torch.rand(1, 3, args.tile_size, args.tile_size, generator=torch.Generator()
                       .manual_seed(0)).to(device)
    rows = []
    for precision in args.precisions:
        dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]

        def ours(precision=precision):
            return predict_sliding_window(model, image, patch_size=args.patch, overlap=0.5,
                                          batch_size=args.batch_size,
                                          **_precision_kwargs(precision))

        def monai(dtype=dtype):
            with torch.inference_mode(), torch.autocast(device.type, dtype=dtype or
                                                        torch.float32,
                                                        enabled=dtype is not None):
                return sliding_window_inference(
                    image, roi_size=(args.patch, args.patch), sw_batch_size=args.batch_size,
                    predictor=lambda x: torch.sigmoid(model(x).float()), overlap=0.5,
                    mode="gaussian", sigma_scale=0.125)

        agreement = float((ours()[0] > 0.5).eq(monai()[0] > 0.5).float().mean())  # warm-up
        times: dict[str, list[float]] = {"ours": [], "monai": []}
        for _ in range(args.repeats):
            times["ours"].append(_time(ours))
            times["monai"].append(_time(monai))
        ours_s, monai_s = statistics.median(times["ours"]), statistics.median(times["monai"])
        rows.append({"precision": precision, "ours_s": round(ours_s, 4),
                     "monai_s": round(monai_s, 4), "ours_images_per_s": round(1 / ours_s, 4),
                     "monai_images_per_s": round(1 / monai_s, 4),
                     "speedup_vs_monai": round(monai_s / ours_s, 3),
                     "all_ours_s": [round(t, 4) for t in times["ours"]],
                     "all_monai_s": [round(t, 4) for t in times["monai"]],
                     "mask_agreement_with_monai": round(agreement, 5)})
        print(f"{precision}: ours {ours_s:.3f} s, MONAI {monai_s:.3f} s per "
              f"{args.tile_size}^2 tile -> {monai_s / ours_s:.2f}x", flush=True)
    return rows


def _precision_kwargs(precision: str) -> dict:
    """``precision=`` for the sliding window (or the older ``autocast_dtype=``)."""
    import inspect

    import torch

    from sa2_pipeline.inference.sliding_window import predict_sliding_window

    if "precision" in inspect.signature(predict_sliding_window).parameters:
        return {"precision": precision}
    return {"autocast_dtype": {"fp32": None, "bf16": torch.bfloat16,
                               "fp16": torch.float16}[precision]}


def profile_ours(args: argparse.Namespace, device) -> str:
    import torch

    from sa2_pipeline.inference.sliding_window import predict_sliding_window

    model = build_model("sa2net", args.base, device)
    image = torch.rand(1, 3, args.tile_size, args.tile_size)
    kwargs = _precision_kwargs(args.precisions[0])
    predict_sliding_window(model, image, patch_size=args.patch, batch_size=args.batch_size,
                           **kwargs)
    profiler = cProfile.Profile()
    profiler.enable()
    predict_sliding_window(model, image, patch_size=args.patch, batch_size=args.batch_size,
                           **kwargs)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(15)
    return out.getvalue()


def write_slide(path: Path, size: int, tissue: float = 0.4, tile: int = 512) -> float:
    """A JPEG-tiled pyramidal TIFF: a stained disc covering ``tissue`` of the area on white
    glass, written tile by tile; returns the disc's area fraction."""
    import numpy as np
    import tifffile

    radius = (tissue * size * size / np.pi) ** 0.5
    rng = np.random.default_rng(0)
    texture = rng.integers(-25, 25, (tile, tile, 3)).astype(np.int16)

    def tiles(level_size: int, scale: int):
        yy, xx = np.mgrid[:tile, :tile]
        for y in range(0, level_size, tile):
            for x in range(0, level_size, tile):
                inside = ((yy + y) * scale - size / 2) ** 2 + ((xx + x) * scale - size / 2) ** 2
                disc = inside < radius**2
                out = np.full((tile, tile, 3), 236, dtype=np.int16)
                out[disc] = np.array([190, 95, 165]) + texture[disc]
                out += texture // 5
                yield out.clip(0, 255).astype(np.uint8)

    levels = [size]
    while levels[-1] > 2048:
        levels.append(-(-levels[-1] // 2))
    options = {"tile": (tile, tile), "compression": "jpeg", "compressionargs": {"level": 90},
               "photometric": "rgb",
               "dtype": np.uint8}
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        tif.write(tiles(size, 1), shape=(size, size, 3), subifds=len(levels) - 1,
                  resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER", **options)
        for k, level in enumerate(levels[1:], start=1):
            tif.write(tiles(level, 2**k), shape=(level, level, 3), subfiletype=1, **options)
    return float(np.pi * radius**2 / size**2)


def slide_child(args: argparse.Namespace) -> None:
    """Runs in the child: segment the slide, print its record as JSON."""
    import torch

    from sa2_pipeline.config import InferenceConfig
    from sa2_pipeline.inference.predict import Predictor
    from sa2_pipeline.inference.segment import segment_file
    from sa2_pipeline.models.bundle import make_bundle

    torch.set_num_threads(args.threads)
    model = build_model(args.slide_model, args.slide_base, torch.device("cpu"))
    bundle = make_bundle(model_name=args.slide_model, init_kwargs=model.init_kwargs,
                         state_dict=model.state_dict(), patch_size=args.patch)
    predictor = Predictor(bundle, device=torch.device(args.device))
    settings = InferenceConfig(batch_size=args.batch_size, precision=args.slide_precision)
    start = time.perf_counter()
    record = segment_file(Path(args.child_slide), predictor, settings,
                          Path(args.child_out), "slide")
    record["wall_s"] = time.perf_counter() - start
    print("RESULT " + json.dumps(record), flush=True)


def whole_slide(args: argparse.Namespace) -> dict[str, object]:
    import tifffile

    with tempfile.TemporaryDirectory(prefix="bench-slide-") as tmp:
        slide = Path(tmp) / "slide.tif"
        t0 = time.perf_counter()
        disc = write_slide(slide, args.slide_size)
        made_s = time.perf_counter() - t0
        print(f"wrote {slide} ({slide.stat().st_size / 1e6:.0f} MB, disc {disc:.0%}) in "
              f"{made_s:.0f} s", flush=True)
        cmd = [sys.executable, __file__, "--child-slide", str(slide), "--child-out", tmp,
               *sys.argv[1:]]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise SystemExit(f"child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
        record = json.loads(line[len("RESULT "):])
        with tifffile.TiffFile(Path(tmp) / record["outputs"]["mask"]) as tif:
            mask_shape = list(tif.pages[0].shape)
            mask_levels = len(tif.series[0].levels)
    result = {
        "slide_size": args.slide_size, "slide_mb": None, "disc_fraction": round(disc, 3),
        "model": args.slide_model, "base_channels": args.slide_base, "patch": args.patch,
        "precision": args.slide_precision, "batch_size": args.batch_size,
        "wall_s": round(record["wall_s"], 1),
        "slides_per_hour": round(3600 / record["wall_s"], 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "peak_rss_method": "resource.getrusage(RUSAGE_CHILDREN).ru_maxrss of the child process",
        "mask_shape": mask_shape, "mask_levels": mask_levels,
        "foreground_fraction": round(record["foreground_fraction"], 4),
        "object_count": record["object_count"],
    }
    print(json.dumps(result, indent=2), flush=True)
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tile", action="store_true", help="ours vs MONAI on one tile")
    parser.add_argument("--slide", action="store_true", help="whole-slide RSS and speed")
    parser.add_argument("--profile", action="store_true", help="cProfile of ours")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--base", type=int, default=16, help="SA2-Net width (tile bench)")
    parser.add_argument("--tile-size", type=int, default=1000)
    parser.add_argument("--patch", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--slide-size", type=int, default=20_000)
    parser.add_argument("--slide-model", default="sa2net", choices=["sa2net", "unet"])
    parser.add_argument("--slide-base", type=int, default=16)
    parser.add_argument("--slide-precision", default="fp32")
    parser.add_argument("--json", default=None, help="results file (default: results/...)")
    parser.add_argument("--child-slide", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.child_slide:
        slide_child(args)
        return 0
    device = torch.device(args.device)
    results: dict[str, object] = {"machine": machine_info(), "args": vars(args)}
    if args.profile:
        print(profile_ours(args, device))
    if args.tile:
        results["tile"] = tile_speed(args, device)
    if args.slide:
        results["slide"] = whole_slide(args)
    if args.tile or args.slide:
        kind = "-".join(k for k in ("tile", "slide") if getattr(args, k))
        out = Path(args.json or HERE / "results" / f"inference-{kind}-{device.type}.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
