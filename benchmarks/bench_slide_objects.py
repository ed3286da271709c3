"""Slide objects benchmark: what instances and vectorisation add to a whole-slide run.

A generated ``--size`` (20,000) square slide at 0.5 um/px whose tissue (a disc over 40 % of
the area) holds nuclei: disks of radius 4-9 px, 60 % of them in touching pairs, about
``--density`` per mm² of tissue. Its foreground probability is generated band by band
(``--band`` rows, as the sliding window hands them on; never whole) and goes, in a *child
process* per mode, through the library's slide path:

- ``mask``: the mask written as the pyramidal mask TIFF and the OME-TIFF (the raster work
  every run does);
- ``instances``: the same plus the object stream (evaluation's watershed rule, objects
  across band seams: :class:`sa2_pipeline.inference.instances_stream.InstanceStream`);
- ``geojson``: the same plus every object's outline, measurements and QuPath GeoJSON
  feature, and the objects CSV (:mod:`sa2_pipeline.inference.vectors`).

So ``instances - mask`` is the time the object stream adds and ``geojson - instances`` the
time vectorisation adds; the model's own time is left out (it does not change). Reported
per mode: wall time, CPU time of the child (user + system, all its threads: steadier than
wall time on a shared machine), peak RSS of the child (``ru_maxrss``), objects, and the
GeoJSON's size plain and gzip-compressed.

    python benchmarks/bench_slide_objects.py --size 20000
    python benchmarks/bench_slide_objects.py --size 4000 --json /tmp/objects.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MPP = 0.5


def nuclei(size: int, density: float, seed: int = 0):
    """``(cy, cx, r)`` of every nucleus, sorted by top row."""
    import numpy as np

    rng = np.random.default_rng(seed)
    radius = (0.4 * size * size / np.pi) ** 0.5
    tissue_mm2 = np.pi * radius**2 * (MPP / 1000) ** 2
    count = int(density * tissue_mm2 / 1.6)  # 60 % come in pairs
    angle = rng.uniform(0, 2 * np.pi, count)
    dist = radius * np.sqrt(rng.uniform(0, 1, count)) * 0.98
    cy, cx = size / 2 + dist * np.sin(angle), size / 2 + dist * np.cos(angle)
    r = rng.uniform(4, 9, count)
    pair = rng.random(count) < 0.375
    theta = rng.uniform(0, np.pi, count)
    r2 = rng.uniform(4, 9, count)
    d = 0.85 * (r + r2)
    cy = np.concatenate([cy, (cy + d * np.sin(theta))[pair]])
    cx = np.concatenate([cx, (cx + d * np.cos(theta))[pair]])
    r = np.concatenate([r, r2[pair]])
    order = np.argsort(cy - r)
    return cy[order], cx[order], r[order]


def probability_bands(size: int, band: int, density: float):
    """``(first_row, float32 (band, size))`` foreground probability, top to bottom."""
    import numpy as np

    cy, cx, r = nuclei(size, density)
    start = 0
    for first in range(0, size, band):
        rows = min(band, size - first)
        prob = np.zeros((rows, size), dtype=np.float32)
        while start < len(cy) and cy[start] + r[start] + 1 < first:
            start += 1
        k = start
        while k < len(cy) and cy[k] - r[k] - 1 < first + rows:
            y0, y1 = max(int(cy[k] - r[k]) - 1, first), min(int(cy[k] + r[k]) + 2, first + rows)
            x0, x1 = max(int(cx[k] - r[k]) - 1, 0), min(int(cx[k] + r[k]) + 2, size)
            if y1 > y0 and x1 > x0:
                yy, xx = np.mgrid[y0:y1, x0:x1]
                disk = np.clip(r[k] + 0.5 - np.hypot(yy - cy[k], xx - cx[k]), 0, 1)
                view = prob[y0 - first : y1 - first, x0:x1]
                np.maximum(view, disk.astype(np.float32), out=view)
            k += 1
        yield first, prob


def child(args: argparse.Namespace) -> None:
    """One mode in this process; prints ``RESULT {...}``."""
    import contextlib
    import types

    import numpy as np

    from sa2_pipeline.config import InstanceConfig
    from sa2_pipeline.inference.instances_stream import InstanceStream
    from sa2_pipeline.inference.outputs import (
        BandSink,
        ObjectOutlines,
        atomic_path,
        write_mask,
        write_ome_tiff,
    )
    from sa2_pipeline.inference.segment import _ObjectSink

    out = Path(args.child_out)
    size = (args.size, args.size)
    source = types.SimpleNamespace(level_dimensions=(size,), mpp=MPP)
    start = time.perf_counter()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_start = usage.ru_utime + usage.ru_stime
    sinks = [BandSink(lambda b: write_mask(out / "m.mask.tif", b, size, mpp=MPP)),
             BandSink(lambda b: write_ome_tiff(out / "m.mask.ome.tif", b, size, mpp=MPP,
                                               channel="mask"))]
    stream = InstanceStream(args.size, args.size, InstanceConfig())
    count = 0
    with contextlib.ExitStack() as files:
        objects = None
        if args.child_mode == "geojson":
            geojson = files.enter_context(open(files.enter_context(
                atomic_path(out / "m.geojson")), "w", encoding="utf-8"))
            table = files.enter_context(open(files.enter_context(
                atomic_path(out / "m.objects.csv")), "w", encoding="utf-8"))
            objects = _ObjectSink(source, 0, "m", geojson, table,
                                  ObjectOutlines(size, (1024, 1024)), ["Nucleus"])
        for first, prob in probability_bands(args.size, args.band, args.density):
            mask = prob > 0.5
            if args.child_mode != "mask":
                found, _ = stream.add(first, mask, prob)
                count += len(found)
                if objects is not None:
                    objects.add(found)
            for sink in sinks:
                sink.put(first, mask.astype(np.uint8) * 255)
        if args.child_mode != "mask":
            found, _ = stream.finish()
            count += len(found)
            if objects is not None:
                objects.add(found)
                objects.close()
        for sink in sinks:
            sink.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result = {"mode": args.child_mode, "wall_s": time.perf_counter() - start,
              "cpu_s": usage.ru_utime + usage.ru_stime - cpu_start,
              "objects": count if args.child_mode != "mask" else None}
    if args.child_mode == "geojson":
        data = (out / "m.geojson").read_bytes()
        result.update({"geojson_mb": len(data) / 1e6,
                       "geojson_gzip_mb": len(gzip.compress(data, 6)) / 1e6,
                       "features": json.loads(data)["features"].__len__()})
    print("RESULT " + json.dumps(result), flush=True)


def run_mode(mode: str, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-objects-") as tmp:
        cmd = [sys.executable, __file__, "--child-mode", mode, "--child-out", tmp,
               "--size", str(args.size), "--band", str(args.band),
               "--density", str(args.density)]
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"{mode} failed:\n{proc.stderr[-3000:]}")
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    result = json.loads(line[len("RESULT "):])
    # ru_maxrss of RUSAGE_CHILDREN is the largest child so far: exact for a growing series
    result["peak_rss_mb"] = round(max(peak, before) / 1024, 1)
    result["peak_rss_exact"] = peak > before
    print(json.dumps(result), flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=20_000)
    parser.add_argument("--band", type=int, default=128, help="rows per band (patch 256, "
                        "overlap 0.5)")
    parser.add_argument("--density", type=float, default=2500.0,
                        help="nuclei per mm^2 of tissue")
    parser.add_argument("--modes", nargs="+", default=["mask", "instances", "geojson"])
    parser.add_argument("--json", default=None)
    parser.add_argument("--child-mode", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_mode:
        child(args)
        return 0
    sys.path.insert(0, str(HERE))
    from _machine import cpu_model

    results = {"cpu": cpu_model(), "size": args.size, "band": args.band,
               "density_per_mm2": args.density,
               "modes": [run_mode(mode, args) for mode in args.modes]}
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
