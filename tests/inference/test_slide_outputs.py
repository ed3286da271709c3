"""What a pathologist opens: QuPath GeoJSON in level-0 coordinates, valid polygons inside
the slide, OME-TIFFs at the right scale, per-slide numbers, and a run index that renders."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from inference_helpers import he_image, tiny_bundle

from sa2_pipeline.config import InferenceConfig
from sa2_pipeline.inference.segment import segment_file

W0, H0, MPP = 640, 400, 0.25


def _slide(path: Path) -> Path:
    """A two-level pyramidal TIFF at 0.25 um/px: the tiny model (0.5 um/px) runs on level 1."""
    image = he_image(H0, W0, seed=3)
    with tifffile.TiffWriter(path) as tif:
        tif.write(image, tile=(128, 128), compression="jpeg", photometric="rgb", subifds=1,
                  resolution=(1e4 / MPP, 1e4 / MPP), resolutionunit="CENTIMETER")
        tif.write(image[::2, ::2], tile=(128, 128), compression="jpeg", photometric="rgb",
                  subfiletype=1)
    return path


@pytest.fixture(scope="module")
def segmented(tmp_path_factory):
    import torch

    from sa2_pipeline.inference.predict import Predictor

    root = tmp_path_factory.mktemp("slide-outputs")
    slide = _slide(root / "slide.tif")
    predictor = Predictor(tiny_bundle(), device=torch.device("cpu"))
    out = root / "out"
    settings = InferenceConfig(model_mpp=0.5, progress=False,
                               outputs=("mask", "geojson", "ome", "labels"))
    record = segment_file(slide, predictor, settings, out, "slide.tif")
    return record, out


def test_geojson_is_qupath_detections_in_level0_pixels_of_a_level1_run(segmented):
    import cv2
    import shapely
    from shapely.geometry import box, shape

    record, out = segmented
    assert record["level"] == 1  # the model ran at half the input's resolution
    collection = json.loads((out / record["outputs"]["geojson"]).read_text())
    assert collection["type"] == "FeatureCollection"
    features = collection["features"]
    assert len(features) == record["object_count"] > 20
    assert len({f["id"] for f in features}) == len(features)
    mask0 = cv2.imread(str(out / record["outputs"]["mask"]), cv2.IMREAD_UNCHANGED) > 0
    assert mask0.shape == (H0, W0)
    slide = box(0, 0, W0, H0)
    hits = 0
    for feature in features:
        props = feature["properties"]
        assert "objectType" not in feature and props["objectType"] == "detection"
        assert props["classification"] == {"name": "Nucleus", "color": [0, 200, 0]}
        geometry = shape(feature["geometry"])
        assert geometry.geom_type in ("Polygon", "MultiPolygon")
        assert geometry.is_valid and slide.contains(geometry)
        m = props["measurements"]
        assert {"area_um2", "perimeter_um", "centroid_x_px", "centroid_y_px", "circularity",
                "solidity", "mean_probability"} <= set(m)
        assert 0 < m["circularity"] <= 1 and 0 < m["solidity"] <= 1
        assert 0.5 <= m["mean_probability"] <= 1  # foreground: above the threshold
        # the polygon's area (level-0 px) is the object's pixel area, not a quarter of it
        assert geometry.area == pytest.approx(m["area_um2"] / MPP**2, rel=0.5, abs=8)
        point = shapely.get_coordinates(geometry.representative_point())[0]
        hits += bool(mask0[int(point[1]), int(point[0])])
    assert hits >= 0.95 * len(features)  # the outlines lie on the level-0 mask
    # level-0 extent: the objects cover the tissue (left two thirds), not the top-left quarter
    right = max(shape(f["geometry"]).bounds[2] for f in features)
    assert right > 0.55 * W0


def test_object_count_is_the_same_in_every_output(segmented):
    record, out = segmented
    with open(out / record["outputs"]["summary"]) as handle:
        summary = next(csv.DictReader(handle))
    rows = (out / record["outputs"]["objects"]).read_text().splitlines()
    assert int(summary["object_count"]) == record["object_count"] == len(rows) - 1
    labels = tifffile.imread(out / record["outputs"]["labels"])
    assert labels.dtype == np.uint32 and labels.shape == (H0, W0)
    assert len(np.unique(labels[labels > 0])) == record["object_count"]
    # area quartiles and the density per mm^2 of tissue are in the summary
    q1, median, q3 = (float(summary[f"object_area_um2_{k}"]) for k in ("q1", "median", "q3"))
    assert 0 < q1 <= median <= q3
    density = float(summary["object_density_per_mm2"])
    assert density == pytest.approx(record["object_count"] / float(summary["tissue_area_mm2"]))


@pytest.mark.parametrize(("key", "channel", "dtype"), [("ome", "mask", np.uint8),
                                                       ("labels", "instances", np.uint32)])
def test_ome_tiff_has_its_pixel_size_and_channel_name(segmented, key, channel, dtype):
    record, out = segmented
    path = out / record["outputs"][key]
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome and tif.pages[0].is_tiled
        ome = tifffile.xml2dict(tif.ome_metadata)["OME"]
        pixels = ome["Image"]["Pixels"]
        assert pixels["PhysicalSizeX"] == pixels["PhysicalSizeY"] == MPP
        assert pixels["PhysicalSizeXUnit"] == "µm"
        assert pixels["Channel"]["Name"] == channel
        assert (pixels["SizeX"], pixels["SizeY"]) == (W0, H0)
        levels = tif.series[0].levels
        assert len(levels) == 2 and levels[1].shape == (H0 // 2, W0 // 2)
        assert levels[0].dtype == dtype
    mask = tifffile.imread(path)
    if key == "ome":
        assert set(np.unique(mask)) <= {0, 255} and (mask > 0).any()


def test_bioio_opens_the_ome_tiff_at_its_scale(segmented):
    pytest.importorskip("bioio_ome_tiff")
    from bioio_ome_tiff import Reader

    record, out = segmented
    reader = Reader(out / record["outputs"]["ome"])
    sizes = reader.physical_pixel_sizes
    x_um, y_um = sizes.X, sizes.Y
    assert abs(x_um - MPP) < 1e-9 and abs(y_um - MPP) < 1e-9
    assert reader.channel_names == ["mask"]
    assert reader.dims.X == W0 and reader.dims.Y == H0


def test_multi_class_objects_get_their_class_and_its_fixed_colour():
    import io

    from slide_objects_helpers import nuclei_probability

    from sa2_pipeline.inference.instances_stream import InstanceStream
    from sa2_pipeline.inference.vectors import CLASS_COLOURS, GeoJSONWriter, level0_polygon

    prob = nuclei_probability(120, 200, seed=2, count=30)
    classes = np.where(prob > 0.5, 1, 0).astype(np.uint8)
    classes[:, 100:] *= 2  # objects on the right are class 2
    stream = InstanceStream(200, 120)
    objects = stream.add(0, prob > 0.5, prob, classes)[0] + stream.finish()[0]
    text = io.StringIO()
    writer = GeoJSONWriter(text, "s", ["tumour", "stroma"])
    for obj in objects:
        writer.write(obj, level0_polygon(obj, (2.0, 2.0), (400, 240)), {})
    writer.close()
    features = json.loads(text.getvalue())["features"]
    seen = {}
    for obj, feature in zip(objects, features, strict=True):
        right = obj.left + obj.mask.shape[1] / 2 > 100
        classification = feature["properties"]["classification"]
        assert classification["name"] == ("stroma" if right else "tumour") or (
            obj.left < 100 < obj.left + obj.mask.shape[1])  # an object across the border
        seen[classification["name"]] = classification["color"]
    assert seen == {"tumour": list(CLASS_COLOURS[0]), "stroma": list(CLASS_COLOURS[1])}
