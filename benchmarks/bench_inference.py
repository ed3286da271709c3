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
tiled pyramidal TIFF at 0.5 um/px with about 40 % tissue (a stained disc on white glass
holding about 86,000 nuclei, 60 % in touching pairs; generated tile by tile, never held
whole: ``_nuclei_slide.py``), fits the network to those nuclei for ``--slide-fit-steps``
(150: held-out Dice about 0.98; 0 keeps random weights, whose mask is the whole tissue), then
segments the slide in a *child process* through the library function the Kedro pipeline
and the CLI use (:func:`sa2_pipeline.inference.segment.segment_file`, the project's
default ``inference.outputs`` unless ``--slide-outputs`` names others) and reports its
wall time, slides/hour, objects and peak RSS. Peak RSS is the child's ``ru_maxrss`` from
``os.wait4`` when it exits (kilobytes on Linux): the maximum
resident set of that process alone, including the interpreter, torch and the model.

**Engines** (``--engine auto|torch|onnxruntime|openvino``, default ``torch``): our side
of the tile and the slide runs through that engine (the network exported to ONNX first, as
registration does; :mod:`sa2_pipeline.inference.engines`), with the batch size ``auto``
picks. MONAI always runs the eager network on the image as given, while ours mirrors a
border around it (the default ``border``), so ours does the extra border tiles' work.
``--slide-compare-eager`` also segments the slide eagerly and reports the masks'
agreement. **Served latency** (``--served``): a pyfunc model logged with its export in a
throwaway MLflow store, loaded with ``model_config={"engine": ...}`` for ``torch`` and for
``--engine``, timed alternately on one 512^2 compact request (a base64 PNG in a one-row
table) in process: the scoring server's own overhead is not included.

    python benchmarks/bench_inference.py --tile --precisions fp32 bf16 --threads 2
    python benchmarks/bench_inference.py --tile --engine auto --precisions fp32 auto
    python benchmarks/bench_inference.py --slide --engine auto --slide-compare-eager
    python benchmarks/bench_inference.py --served --engine auto
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
    """The benchmark's network: random weights, seeded, so every process (the slide's
    children, the parent that exports for them) builds the same one."""
    import torch

    from sa2_pipeline.models import create_model

    torch.manual_seed(0)
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
        dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16,
                 "auto": None}[precision]
        network, batch, run_precision, engine = _engine_network(args, model, precision, device)

        def ours(precision=run_precision, network=network, batch=batch):
            return predict_sliding_window(network, image, patch_size=args.patch, overlap=0.5,
                                          batch_size=batch, **_precision_kwargs(precision))

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
        rows.append({"precision": precision, "engine": engine, "ours_s": round(ours_s, 4),
                     "monai_s": round(monai_s, 4), "ours_images_per_s": round(1 / ours_s, 4),
                     "monai_images_per_s": round(1 / monai_s, 4),
                     "speedup_vs_monai": round(monai_s / ours_s, 3),
                     "all_ours_s": [round(t, 4) for t in times["ours"]],
                     "all_monai_s": [round(t, 4) for t in times["monai"]],
                     "mask_agreement_with_monai": round(agreement, 5)})
        print(f"{precision} ({engine['engine']} {engine['precision']}, batch "
              f"{engine['batch_size']}): ours {ours_s:.3f} s, MONAI {monai_s:.3f} s per "
              f"{args.tile_size}^2 tile -> {monai_s / ours_s:.2f}x", flush=True)
    return rows


_KEEP: list = []


def _bundle(model, patch: int) -> dict:
    from sa2_pipeline.models.bundle import make_bundle

    return make_bundle(model_name=model.model_name, init_kwargs=model.init_kwargs,
                       state_dict=model.state_dict(), patch_size=patch)


def _engine_network(args: argparse.Namespace, model, precision: str, device):
    """(network, batch size, precision for the window's autocast, engine record) of
    ``--engine`` for ``model``: the eager model for ``torch``, else a Predictor's
    engine-backed network on an export made now."""
    from sa2_pipeline.inference.engines import engine_predictor

    if args.engine == "torch":
        return model, args.batch_size, precision, {
            "engine": "torch", "precision": precision, "batch_size": args.batch_size}
    predictor = engine_predictor(_bundle(model, args.patch), device=device,
                                 precision=precision, batch_size=args.batch_size,
                                 engine=args.engine, onnx_files="export")
    _KEEP.append(predictor)  # its export folder lives as long as the benchmark
    record = predictor.engine.as_record()
    return predictor.models[0], predictor.batch_size, predictor.precision, record


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


def slide_model(args: argparse.Namespace):
    """The slide's network: the benchmark's seeded one, with the weights fitted by the
    parent when ``--child-weights`` names them."""
    import torch

    model = build_model(args.slide_model, args.slide_base, torch.device("cpu"))
    if getattr(args, "child_weights", None):
        model.load_state_dict(torch.load(args.child_weights, weights_only=True))
    return model.eval()


def slide_child(args: argparse.Namespace) -> None:
    """Runs in the child: segment the slide, print its record as JSON."""
    import torch

    from sa2_pipeline.config import InferenceConfig
    from sa2_pipeline.inference.engines import engine_predictor
    from sa2_pipeline.inference.segment import segment_file
    from sa2_pipeline.models.bundle import make_bundle

    torch.set_num_threads(args.threads)
    model = slide_model(args)
    bundle = make_bundle(model_name=args.slide_model, init_kwargs=model.init_kwargs,
                         state_dict=model.state_dict(), patch_size=args.patch)
    start = time.perf_counter()
    # the export made by the parent (as registration makes it, outside the segmenting
    # process): the child's peak RSS is inference's own
    files = [Path(args.child_onnx) / "member_0.onnx"] if args.child_onnx else None
    predictor = engine_predictor(bundle, device=torch.device(args.device),
                                 precision=args.slide_precision, batch_size=args.batch_size,
                                 engine=args.child_engine, onnx_files=files)
    setup_s = time.perf_counter() - start  # sessions and (auto, first time) the measurement
    outputs = {"outputs": tuple(args.slide_outputs)} if args.slide_outputs else {}
    settings = InferenceConfig(batch_size=predictor.batch_size,
                               precision=args.slide_precision, engine=args.child_engine,
                               **outputs)
    start = time.perf_counter()
    record = segment_file(Path(args.child_slide), predictor, settings,
                          Path(args.child_out), "slide")
    record["wall_s"] = time.perf_counter() - start
    record["engine_setup_s"] = round(setup_s, 2)
    record["engine"] = predictor.engine.as_record()
    print("RESULT " + json.dumps(record), flush=True)


def _read_mask(path: Path):
    """A mask file's level 0 (tiled pyramidal TIFF for slides, PNG for small images)."""
    import cv2
    import tifffile

    if path.suffix in (".tif", ".tiff"):
        return tifffile.imread(path, level=0)
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def _slide_child(args: argparse.Namespace, slide: Path, out: Path,
                 engine: str) -> tuple[dict, int]:
    """Segment ``slide`` in a child process with ``engine``: its record and peak RSS (kB)."""
    out.mkdir(parents=True, exist_ok=True)
    onnx = []
    if engine != "torch":

        from sa2_pipeline.inference.onnx_export import export_members

        export_members(_bundle(slide_model(args), args.patch), out / "onnx")
        onnx = ["--child-onnx", str(out / "onnx")]
    weights = ["--child-weights", args.child_weights] if args.child_weights else []
    cmd = [sys.executable, __file__, "--child-slide", str(slide), "--child-out", str(out),
           "--child-engine", engine, *onnx, *weights, *sys.argv[1:]]
    with tempfile.TemporaryFile("w+") as out_f, tempfile.TemporaryFile("w+") as err_f:
        proc = subprocess.Popen(cmd, stdout=out_f, stderr=err_f, text=True)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS
        proc.returncode = os.waitstatus_to_exitcode(status)
        out_f.seek(0)
        err_f.seek(0)
        stdout, stderr = out_f.read(), err_f.read()
    if proc.returncode != 0:
        raise SystemExit(f"child failed ({proc.returncode}):\n{stderr[-3000:]}")
    line = next(x for x in stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):]), usage.ru_maxrss


def served_latency(args: argparse.Namespace) -> dict[str, object]:
    """Median latency of one 512^2 compact request: eager (``torch``) vs ``--engine``."""
    import base64

    import cv2
    import mlflow
    import mlflow.pyfunc
    import numpy as np
    import pandas as pd
    import torch

    from sa2_pipeline.tracking.registration import _log_with_export

    model = build_model("sa2net", args.base, torch.device("cpu"))
    bundle = _bundle(model, args.patch)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (args.served_size, args.served_size, 3), dtype=np.uint8)
    ok, png = cv2.imencode(".png", image)
    request = pd.DataFrame({"image": [base64.b64encode(png.tobytes()).decode()]})
    with tempfile.TemporaryDirectory(prefix="bench-served-") as tmp:
        mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
        # artifacts in the temporary folder too, never the working folder's ./mlruns
        mlflow.create_experiment("bench-served", artifact_location=f"{tmp}/artifacts")
        mlflow.set_experiment("bench-served")
        with mlflow.start_run():
            info, tags = _log_with_export(bundle)
        engines = ["torch", args.engine] if args.engine != "torch" else ["torch"]
        loaded = {e: mlflow.pyfunc.load_model(info.model_uri, model_config={"engine": e})
                  for e in engines}
        answers = {e: m.predict(request) for e, m in loaded.items()}  # warm-up
        times: dict[str, list[float]] = {e: [] for e in engines}
        for _ in range(args.repeats):
            for engine, m in loaded.items():
                times[engine].append(_time(lambda m=m: m.predict(request)))
        chosen = {e: m.unwrap_python_model().predictor.engine.as_record()
                  for e, m in loaded.items()}
    same = len({a["mask"].iloc[0] for a in answers.values()}) == 1
    result = {"request": f"{args.served_size}x{args.served_size} PNG, compact form",
              "median_s": {e: round(statistics.median(t), 4) for e, t in times.items()},
              "all_s": {e: [round(x, 4) for x in t] for e, t in times.items()},
              "engines": chosen, "same_mask": same, "export_tags": tags}
    if len(engines) == 2:
        result["speedup"] = round(statistics.median(times["torch"])
                                  / statistics.median(times[args.engine]), 3)
    print(json.dumps({k: result[k] for k in ("median_s", "same_mask")}, indent=2), flush=True)
    return result


def whole_slide(args: argparse.Namespace) -> dict[str, object]:
    import tifffile
    import torch
    from _nuclei_slide import NucleiSlide, fit

    with tempfile.TemporaryDirectory(prefix="bench-slide-") as tmp:
        slide = Path(tmp) / "slide.tif"
        t0 = time.perf_counter()
        drawn = NucleiSlide(args.slide_size)
        disc = drawn.write(slide)
        made_s = time.perf_counter() - t0
        print(f"wrote {slide} ({slide.stat().st_size / 1e6:.0f} MB, disc {disc:.0%}, "
              f"{len(drawn.cy)} nuclei) in {made_s:.0f} s", flush=True)
        fitted = None
        if args.slide_fit_steps:
            model = build_model(args.slide_model, args.slide_base, torch.device("cpu"))
            fitted = fit(model, drawn, args.slide_fit_steps)
            args.child_weights = str(Path(tmp) / "fitted.pt")
            torch.save(model.state_dict(), args.child_weights)
            print(f"fitted the network: {fitted}", flush=True)
        record, peak_kb = _slide_child(args, slide, Path(tmp) / "engine", args.engine)
        mask_file = Path(tmp) / "engine" / record["outputs"]["mask"]
        mask_shape, mask_levels = list(_read_mask(mask_file).shape), 1
        if mask_file.suffix in (".tif", ".tiff"):
            with tifffile.TiffFile(mask_file) as tif:
                mask_levels = len(tif.series[0].levels)
        agreement = None
        if args.slide_compare_eager:
            eager, _ = _slide_child(args, slide, Path(tmp) / "eager", "torch")
            agreement = round(float((_read_mask(mask_file) == _read_mask(
                Path(tmp) / "eager" / eager["outputs"]["mask"])).mean()), 6)
            record["eager_wall_s"] = eager["wall_s"]
    result = {
        "slide_size": args.slide_size, "disc_fraction": round(disc, 3),
        "nuclei_drawn": len(drawn.cy), "fit": fitted,
        "outputs": args.slide_outputs or "default (inference.outputs)",
        "model": args.slide_model, "base_channels": args.slide_base, "patch": args.patch,
        "precision": args.slide_precision, "batch_size": args.batch_size,
        "engine": record.get("engine"), "engine_setup_s": record.get("engine_setup_s"),
        "wall_s": round(record["wall_s"], 1),
        "slides_per_hour": round(3600 / record["wall_s"], 2),
        "eager_wall_s": round(record["eager_wall_s"], 1) if "eager_wall_s" in record else None,
        "mask_agreement_with_eager": agreement,
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "peak_rss_method": "os.wait4(child).ru_maxrss: the engine's child process alone",
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
    parser.add_argument("--slide-fit-steps", type=int, default=150,
                        help="fit the slide's network to its nuclei first (0: random "
                        "weights, which call the whole tissue foreground)")
    parser.add_argument("--slide-outputs", nargs="+", default=None,
                        help="inference.outputs of the slide run (default: the project's)")
    parser.add_argument("--engine", default="torch",
                        choices=["auto", "torch", "onnxruntime", "openvino"],
                        help="what runs our network (tile, slide, served)")
    parser.add_argument("--slide-compare-eager", action="store_true",
                        help="also segment the slide eagerly; report the masks' agreement")
    parser.add_argument("--served", action="store_true",
                        help="served model latency, torch vs --engine")
    parser.add_argument("--served-size", type=int, default=512)
    parser.add_argument("--child-engine", help=argparse.SUPPRESS)
    parser.add_argument("--child-onnx", help=argparse.SUPPRESS)
    parser.add_argument("--child-weights", help=argparse.SUPPRESS)
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
    if args.served:
        results["served"] = served_latency(args)
    if args.tile or args.slide or args.served:
        kind = "-".join(k for k in ("tile", "slide", "served") if getattr(args, k))
        suffix = "" if args.engine == "torch" else f"-{args.engine}"
        out = Path(args.json or HERE / "results"
                   / f"inference-{kind}-{device.type}{suffix}.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
