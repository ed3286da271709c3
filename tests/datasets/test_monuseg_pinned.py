"""MoNuSeg ingestion output pinned bit for bit.

The hashes and messages below were recorded with the straightforward implementation
(ElementTree + one ``skimage.draw.polygon`` call per nucleus, one file after another)
before it was optimised; the fast one (bulk vertex reading, scanline rasteriser, process
pool) must give identical masks, manifests and problem lists. The rasteriser is also
compared with ``skimage.draw.polygon`` directly on polygons made to hit the pixel rule's
corner cases (vertices and edges exactly on pixel centres, near-integers, bow-ties).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from skimage.draw import polygon as draw_polygon

from sa2_pipeline.datasets.monuseg import (
    TEST_DIR,
    TRAIN_ANNOTATION_DIR,
    TRAIN_IMAGE_DIR,
    format_aperio_xml,
    load_monuseg,
    polygons_to_instances,
    polygons_to_mask,
)
from sa2_pipeline.datasets.monuseg import convert as monuseg
from sa2_pipeline.datasets.monuseg.aperio import AnnotationError as _AnnotationError
from sa2_pipeline.datasets.monuseg.aperio import parse_aperio_fast as _parse_aperio_fast
from sa2_pipeline.datasets.monuseg.aperio import parse_aperio_tree as _parse_aperio_tree
from sa2_pipeline.datasets.schema import DatasetValidationError, sha256_array
from sa2_pipeline.datasets.synthetic import generate_synthetic_monuseg

WIDTH, HEIGHT = 52, 46

# Recorded with the pre-optimisation implementation (see the module docstring).
EDGE_CASE_MASK_SHA256 = "090238b269b8ae57a00b606c4175ab4a4b63d3ae91c3a8d573ed52037be1fabf"
EDGE_CASE_INSTANCES_SHA256 = "f41c96219a12ff8bad3c04347f58eebdd7e05373cf6d9c22f9e0d9696a1b9326"
SYNTHETIC_MASK_SHA256 = {  # generate_synthetic_monuseg(n_train=3, n_test=2, size 256, seed 11)
    "SYN-TRAIN-000": "3a71ce06844ce26fb86e816d2ac1007ac16574a9d97990e0a0bf7affacd3d98f",
    "SYN-TRAIN-001": "f5e87e8b5da3746fce97f455ea17eda5600ba43066bdfe1daec1719639d85f0d",
    "SYN-TRAIN-002": "6a2155c491210d5ac7e1d87739055ecc9c769842780a3a795a2c6051027d3c2e",
    "SYN-TEST-000": "e1762b19ca109c85817ef7fdc4c6591718a89f127ef1584ee6dfe774adc10f1d",
    "SYN-TEST-001": "7f92596088bd6d6d174324a04dcb54ab7a1938846c48630f738a37711f076b8a",
}
HANDMADE_MASK_SHA256 = {  # write_handmade_dataset
    "EDGE-A": "090238b269b8ae57a00b606c4175ab4a4b63d3ae91c3a8d573ed52037be1fabf",
    "EDGE-B": "d7b4f90e10717ed77c047d921bd82edbfe805869e6025c6e523ace8ee526c242",
    "EDGE-C": "97279ee748b0ef9d8105a6670e0876f04483f5e64a3e56358c05e2156436b472",
}
_EDGE_A = "MoNuSeg 2018 Training Data/Annotations/EDGE-A.xml"
BAD_DATASET_PROBLEMS = [  # write_bad_dataset: every problem, in this order
    ("MoNuSegTestData/ORPHAN.xml",
     "annotation without image (expected <root>/MoNuSegTestData/ORPHAN.tif)"),
    (_EDGE_A, "region #1 (Id=2): 2 of 3 vertices outside the 52x46 image by more than 1 px, "
     "first vertex 1 at (x=57.00, y=12.00)"),
    (_EDGE_A, "region #2 (Id=3): polygon has 2 vertices, needs at least 3"),
    (_EDGE_A, "region #4 (Id=5): 2 of 3 vertices outside the 52x46 image by more than 1 px, "
     "first vertex 1 at (x=56.00, y=11.00)"),
    ("MoNuSeg 2018 Training Data/Annotations/EDGE-B.xml",
     "malformed XML: no element found: line 1, column 25"),
    ("MoNuSeg 2018 Training Data/Tissue Images/GREY.tif",
     "expected an RGB or RGBA image (H, W, 3|4), got shape (46, 52) (axes 'YX'); grayscale "
     "tiles are not accepted for H&E"),
    ("MoNuSeg 2018 Training Data/Annotations/NAN-X.xml",
     "region #0 (Id=1): vertex 0 has no numeric X/Y attributes "
     "({'X': 'abc', 'Y': '10.000', 'Z': '0'})"),
    ("MoNuSeg 2018 Training Data/Annotations/NAN-Y.xml",
     "region #0 (Id=1): non-finite vertex coordinates"),
    ("MoNuSegTestData/EMPTY.xml", "no nucleus polygons (no Annotation/Regions/Region elements)"),
    ("MoNuSegTestData/NO-Y.xml",
     "region #0 (Id=1): vertex 0 has no numeric X/Y attributes ({'X': '10.000', 'Z': '0'})"),
    ("MoNuSegTestData/TWIN.tif",
     "duplicate image: identical pixels to <root>/MoNuSegTestData/EDGE-C.tif"),
    ("MoNuSegTestData/WRONG-ROOT.xml",
     "not an Aperio ImageScope annotation: root element <Regions>, expected <Annotations>"),
]


def edge_case_polygons(width: int, height: int) -> list[np.ndarray]:
    """Polygons that hit every corner of the pixel rule, as ``(x, y)`` vertices."""
    a = np.array
    polygons = [
        a([[10.0, 10.0], [30.0, 10.0], [30.0, 30.0], [10.0, 30.0]]),  # integer square
        a([[0.6, 0.6], [3.4, 0.6], [3.4, 2.4], [0.6, 2.4]]),  # fractional box
        a([[5.5, 2.5], [9.5, 2.5], [9.5, 6.5], [5.5, 6.5]]),  # half-integers
        a([[40.0, 5.0], [45.0, 5.0], [45.0, 5.0], [47.0, 9.0], [40.0, 9.0]]),  # repeated vertex
        a([[12.0, 35.0], [20.0, 43.0], [12.0, 43.0], [20.0, 35.0]]),  # bow-tie
        a([[25.0, 35.0], [28.0, 35.0], [31.0, 35.0]]),  # collinear (flat)
        a([[33.2, 33.2], [33.4, 33.3], [33.3, 33.45]]),  # sub-pixel
        a([[2.0, 20.0], [6.0, 16.0], [8.0, 20.0], [6.0, 24.0]]),  # diamond on centres
        a([[14.0, 14.0], [18.0, 14.0], [18.0, 18.0], [14.0, 18.0], [14.0, 14.0]]),  # closed
        a([[50.0, 20.0], [50.0, 30.0], [44.0, 30.0], [44.0, 20.0]]),  # clockwise
        a([[width - 3.0, 0.0], [float(width), 0.0], [float(width), 4.0]]),  # image corner
        a([[0.0, height - 5.0], [4.0, float(height)], [0.0, float(height)]]),  # other corner
        a(
            [
                [36.0000000001, 12.0],
                [38.9999999999, 12.0000000001],
                [38.9999999999, 15.9999999999],
                [36.0000000001, 16.0],
            ]
        ),  # near-integers
        a([[20.5, 20.0], [23.0, 22.5], [20.5, 25.0], [18.0, 22.5]]),  # edges through centres
        a([[41.25, 31.75], [47.125, 33.5], [46.0, 38.875], [42.5, 37.0], [43.0, 34.0]]),
    ]
    rng = np.random.default_rng(1234)
    for _ in range(40):
        centre = rng.uniform([3, 3], [width - 3, height - 3])
        k = int(rng.integers(3, 30))
        angles = np.sort(rng.uniform(0, 2 * np.pi, k))
        radii = rng.uniform(0.5, 6.0, k)
        polygon = centre + np.column_stack([np.cos(angles), np.sin(angles)]) * radii[:, None]
        polygon = np.round(polygon, int(rng.integers(0, 4)))  # 0..3 decimals: exact hits
        polygons.append(np.clip(polygon, 0.0, [width, height]))
    return polygons


def _skimage_union(polygons: list[np.ndarray], height: int, width: int) -> np.ndarray:
    """The reference: one skimage.draw.polygon call per polygon."""
    mask = np.zeros((height, width), np.uint8)
    for vertices in polygons:
        rows, cols = draw_polygon(vertices[:, 1], vertices[:, 0], shape=(height, width))
        mask[rows, cols] = 1
    return mask


# --------------------------------------------------------------------------- rasteriser


def test_edge_case_masks_are_pinned() -> None:
    polygons = edge_case_polygons(WIDTH, HEIGHT)
    mask = polygons_to_mask(polygons, HEIGHT, WIDTH)
    np.testing.assert_array_equal(mask, _skimage_union(polygons, HEIGHT, WIDTH))
    assert sha256_array(mask) == EDGE_CASE_MASK_SHA256
    labels = polygons_to_instances(polygons, HEIGHT, WIDTH)
    assert sha256_array(labels) == EDGE_CASE_INSTANCES_SHA256


@pytest.mark.parametrize("decimals", [0, 1, 3, None])
def test_rasteriser_equals_skimage_on_random_polygons(decimals: int | None) -> None:
    """Random star-shaped and self-intersecting polygons, partly outside the image."""
    rng = np.random.default_rng(decimals or 99)
    height, width = 61, 83
    polygons = []
    for index in range(400):
        k = int(rng.integers(3, 40))
        centre = rng.uniform([-5, -5], [width + 5, height + 5])
        if index % 4 == 0:  # arbitrary vertex order: self-intersecting
            polygon = centre + rng.uniform(-9, 9, (k, 2))
        else:
            angles = np.sort(rng.uniform(0, 2 * np.pi, k))
            radii = rng.uniform(0.3, 12.0, k)
            polygon = centre + np.column_stack([np.cos(angles), np.sin(angles)]) * radii[:, None]
        if decimals is not None:
            polygon = np.round(polygon, decimals)
        if index % 7 == 0:  # near-integers, both sides, around the vertex tolerance
            polygon = np.round(polygon) + rng.choice([-1e-9, -1e-13, 0.0, 1e-13, 1e-9], (k, 2))
        polygons.append(polygon)
    for start in range(0, len(polygons), 50):  # several masks: overlaps stay readable
        chunk = polygons[start : start + 50]
        np.testing.assert_array_equal(
            polygons_to_mask(chunk, height, width), _skimage_union(chunk, height, width)
        )
    for polygon in polygons[:60]:  # and one by one
        np.testing.assert_array_equal(
            polygons_to_mask([polygon], height, width),
            _skimage_union([polygon], height, width),
        )
    # Instance maps: one skimage call per polygon in order, the later one winning,
    # including the tied polygons that the fast path hands to skimage among fast ones.
    for start in range(0, len(polygons), 50):
        chunk = polygons[start : start + 50]
        expected = np.zeros((height, width), np.int32)
        for label, vertices in enumerate(chunk, start=1):
            rows, cols = draw_polygon(vertices[:, 1], vertices[:, 0], shape=(height, width))
            expected[rows, cols] = label
        np.testing.assert_array_equal(polygons_to_instances(chunk, height, width), expected)


def test_rasteriser_handles_degenerate_input_like_skimage() -> None:
    height, width = 12, 14
    cases = [
        [np.array([[3.0, 4.0]])],  # one vertex, on a pixel centre
        [np.array([[3.0, 4.0], [9.0, 4.0]])],  # a segment along a row
        [np.array([[2.0, 2.0], [9.0, 7.0]])],  # a diagonal segment
        [np.array([[-8.0, -8.0], [-2.0, -8.0], [-2.0, -2.0]])],  # entirely outside
        [np.array([[100.0, 5.0], [120.0, 5.0], [110.0, 9.0]])],  # right of the image
        [],  # no polygons
    ]
    for polygons in cases:
        np.testing.assert_array_equal(
            polygons_to_mask(polygons, height, width), _skimage_union(polygons, height, width)
        )


# --------------------------------------------------------------------------- datasets


def _write_tile(root: Path, split: str, stem: str, image: np.ndarray, xml: str) -> None:
    if split == "train":
        image_path = root / TRAIN_IMAGE_DIR / f"{stem}.tif"
        xml_path = root / TRAIN_ANNOTATION_DIR / f"{stem}.xml"
    else:
        image_path = root / TEST_DIR / f"{stem}.tif"
        xml_path = root / TEST_DIR / f"{stem}.xml"
    image_path.parent.mkdir(parents=True, exist_ok=True)
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(image_path, image, photometric="rgb" if image.ndim == 3 else None)
    xml_path.write_text(xml)


def write_handmade_dataset(root: Path) -> None:
    """Three tiles with the edge-case polygons, some just past the image edge (clipped)."""
    rng = np.random.default_rng(5)
    polygons = edge_case_polygons(WIDTH, HEIGHT)
    past_edge = [
        np.array([[WIDTH - 4.0, 10.0], [WIDTH + 0.5, 10.0], [WIDTH + 0.9, 16.0]]),
        np.array([[-0.75, 30.0], [3.0, 29.0], [2.0, 33.5], [-1.0, 33.0]]),
        np.array([[20.0, -0.4], [26.0, -1.0], [24.0, 3.5]]),
        np.array([[30.0, HEIGHT + 1.0], [34.0, HEIGHT - 3.0], [36.0, HEIGHT + 0.2]]),
    ]
    tiles = [
        ("train", "EDGE-A", polygons, 10),
        ("train", "EDGE-B", polygons[::-1] + past_edge, 10),
        ("test", "EDGE-C", [p + 0.25 for p in polygons[15:]] + past_edge, 3),
    ]
    for split, stem, tile_polygons, decimals in tiles:
        image = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
        _write_tile(root, split, stem, image, format_aperio_xml(tile_polygons, decimals))


def write_bad_dataset(root: Path) -> None:
    """A dataset with one or more problems in most files."""
    write_handmade_dataset(root)
    rng = np.random.default_rng(6)
    square = np.array([[10.0, 10.0], [20.0, 10.0], [20.0, 20.0], [10.0, 20.0]])
    far_out = np.array([[10.0, 10.0], [WIDTH + 5.0, 12.0], [WIDTH + 9.0, 20.0]])
    two = np.array([[1.0, 1.0], [5.0, 5.0]])
    xml = root / TRAIN_ANNOTATION_DIR / "EDGE-A.xml"
    xml.write_text(format_aperio_xml([square, far_out, two, square + 3, far_out - 1]))
    (root / TRAIN_ANNOTATION_DIR / "EDGE-B.xml").write_text("<Annotations><Annotation>")

    def image() -> np.ndarray:
        return rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)

    ok = format_aperio_xml([square])
    _write_tile(root, "train", "GREY", image()[..., 0], ok)
    bad_vertex = ok.replace('X="10.000"', 'X="abc"', 1)
    _write_tile(root, "train", "NAN-X", image(), bad_vertex)
    nan = ok.replace('Y="20.000"', 'Y="nan"', 1)
    _write_tile(root, "train", "NAN-Y", image(), nan)
    no_regions = format_aperio_xml([])
    _write_tile(root, "test", "EMPTY", image(), no_regions)
    _write_tile(root, "test", "WRONG-ROOT", image(), "<Regions><Region/></Regions>")
    duplicate = tifffile.imread(root / TEST_DIR / "EDGE-C.tif")
    _write_tile(root, "test", "TWIN", duplicate, ok)
    missing_y = ok.replace(' Y="10.000"', "", 1)
    _write_tile(root, "test", "NO-Y", image(), missing_y)
    shutil.copy(root / TEST_DIR / "EDGE-C.xml", root / TEST_DIR / "ORPHAN.xml")


def _relative_problems(problems: list[tuple[str, str]], root: Path) -> list[tuple[str, str]]:
    return [
        (Path(path).relative_to(root).as_posix(), reason.replace(str(root), "<root>"))
        for path, reason in problems
    ]


def test_synthetic_manifest_is_pinned(tmp_path: Path) -> None:
    root = tmp_path / "raw"
    generate_synthetic_monuseg(root, n_train=3, n_test=2, image_size=256, seed=11)
    dataset = load_monuseg(root)
    hashes = dict(zip(dataset.manifest["id"], dataset.manifest["mask_sha256"], strict=True))
    assert hashes == SYNTHETIC_MASK_SHA256
    for sample_id, mask in dataset.masks.items():
        assert sha256_array(mask) == hashes[sample_id]


def test_handmade_manifest_is_pinned(tmp_path: Path) -> None:
    root = tmp_path / "raw"
    write_handmade_dataset(root)
    dataset = load_monuseg(root)
    hashes = dict(zip(dataset.manifest["id"], dataset.manifest["mask_sha256"], strict=True))
    assert hashes == HANDMADE_MASK_SHA256


def test_problem_list_is_pinned(tmp_path: Path) -> None:
    root = tmp_path / "raw"
    write_bad_dataset(root)
    with pytest.raises(DatasetValidationError) as info:
        load_monuseg(root)
    assert _relative_problems(info.value.problems, root) == BAD_DATASET_PROBLEMS


# --------------------------------------------------------------------------- annotation parser


def _outcome(parse, data: bytes):
    """What a parser makes of ``data``: the regions, or the error message."""
    try:
        regions = parse(data)
    except _AnnotationError as err:
        return ("error", str(err))
    if regions is None:
        return None
    return ("ok", [(r.label, r.vertices.tolist()) for r in regions])


_BASE_POLYGONS = [
    np.array([[10.5, 10.25], [20.0, 10.0], [20.125, 20.0], [10.0, 20.75]]),
    np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 1.0]]),
    np.array([[7.0, 7.0], [8.0, 7.5], [7.5, 9.0], [6.5, 8.0], [6.8, 7.2]]),
]

_VARIANTS = {
    "canonical": lambda s: s,
    "no z": lambda s: s.replace(' Z="0"', ""),
    "crlf": lambda s: s.replace("\n", "\r\n"),
    "tabs": lambda s: s.replace("\n<Vertex ", "\n\t\t<Vertex "),
    "spaced attributes": lambda s: s.replace('<Vertex X="', '<Vertex  X = "'),
    "space before />": lambda s: s.replace('Z="0"/>', 'Z="0" />'),
    "scientific": lambda s: s.replace('X="20.000"', 'X="2.0e1"'),
    "signed": lambda s: s.replace('X="1.000"', 'X="+1.000"').replace('Y="1.000"', 'Y="-0.0"'),
    "bom": lambda s: "\ufeff" + s,
    "no declaration": lambda s: s.split("\n", 1)[1],
    "latin-1": lambda s: s.replace('encoding="UTF-8"', 'encoding="ISO-8859-1"'),
    "utf-16 declared": lambda s: s.replace('encoding="UTF-8"', 'encoding="UTF-16"'),
    "empty vertices": lambda s: s.replace("<Attributes/>", "<Attributes/><Vertices></Vertices>", 1),
    "self-closed vertices": lambda s: s.replace("<Attributes/>", "<Attributes/><Vertices/>", 1),
    "vertices with attribute": lambda s: s.replace("<Vertices>", '<Vertices n="1">', 1),
    "comment": lambda s: s.replace("<Vertices>", "<!-- x --><Vertices>", 1),
    "comment in block": lambda s: s.replace("<Vertices>", "<Vertices><!-- x -->", 1),
    "cdata": lambda s: s.replace(
        "<Attributes/>", "<Attributes><![CDATA[<Vertex/>]]></Attributes>", 1
    ),
    "doctype entity": lambda s: s.replace(
        "<Annotations", '<!DOCTYPE Annotations [<!ENTITY v "7">]>\n<Annotations', 1
    ).replace('X="10.500"', 'X="&v;"', 1),
    "char reference": lambda s: s.replace('X="10.500"', 'X="1&#48;.5"', 1),
    "processing instruction": lambda s: s.replace("<Regions>", "<Regions><?pi x?>", 1),
    "single quotes": lambda s: s.replace('X="10.500"', "X='10.500'", 1),
    "y first": lambda s: s.replace(
        '<Vertex X="10.500" Y="10.250"', '<Vertex Y="10.250" X="10.500"', 1
    ),
    "extra attribute": lambda s: s.replace('Z="0"/>', 'Z="0" W="1"/>', 1),
    "missing y": lambda s: s.replace(' Y="10.250"', "", 1),
    "nan": lambda s: s.replace('Y="10.250"', 'Y="nan"', 1),
    "inf": lambda s: s.replace('Y="10.250"', 'Y="1e999"', 1),
    "empty value": lambda s: s.replace('Y="10.250"', 'Y=""', 1),
    "bad number": lambda s: s.replace('Y="10.250"', 'Y="1.2.3"', 1),
    "underscore": lambda s: s.replace('Y="10.250"', 'Y="1_0"', 1),
    "padded value": lambda s: s.replace('Y="10.250"', 'Y=" 10.250 "', 1),
    "newline in value": lambda s: s.replace('Y="10.250"', 'Y="10.250\n"', 1),
    "text in block": lambda s: s.replace("</Vertices>", "junk</Vertices>", 1),
    "nested vertices": lambda s: s.replace("<Vertices>", "<Vertices><Vertices>", 1),
    "vertex elsewhere": lambda s: s.replace("<Attributes/>", '<Vertex X="1" Y="2"/>', 1),
    "block elsewhere": lambda s: s.replace(
        "<Plots/>", '<Plots><Vertices><Vertex X="1" Y="2"/></Vertices></Plots>'
    ),
    "open vertex": lambda s: s.replace('Z="0"/>', 'Z="0"></Vertex>', 1),
    "unclosed block": lambda s: s.replace("</Vertices>", "", 1),
    "truncated": lambda s: s[: len(s) // 2],
    "junk after root": lambda s: s + "<Vertices></Vertices>",
    "namespace": lambda s: s.replace("<Annotations ", '<Annotations xmlns="urn:x" ', 1),
    "wrong root": lambda s: s.replace("Annotations", "Annotationz"),
    "no regions": lambda s: format_aperio_xml([]),
    "placeholder name": lambda s: s.replace("<Plots/>", '<Plots sa2-vertex-block="0"/>'),
}


@pytest.mark.parametrize("variant", sorted(_VARIANTS))
def test_fast_parser_agrees_with_elementtree(variant: str) -> None:
    data = _VARIANTS[variant](format_aperio_xml(_BASE_POLYGONS)).encode()
    reference = _outcome(_parse_aperio_tree, data)
    fast = _outcome(_parse_aperio_fast, data)
    assert fast is None or fast == reference
    if variant in {"canonical", "no z", "crlf", "tabs", "scientific", "bom", "no declaration"}:
        assert fast is not None, "the usual layouts take the fast path"


def test_fast_parser_agrees_with_elementtree_on_random_damage() -> None:
    rng = np.random.default_rng(2024)
    base = format_aperio_xml(_BASE_POLYGONS).replace(
        "<Attributes/>", '<Attributes/><Vertices></Vertices>', 1
    )
    alphabet = list('<>/"\'&=!?- \n\t.e1aZXY;#')
    alphabet += ["<Vertex ", "</Vertices>", "<Vertices>", ' Z="0"']
    used_fast = 0
    for _ in range(1500):
        text = base
        for _ in range(int(rng.integers(1, 4))):
            at = int(rng.integers(0, len(text)))
            action = rng.integers(0, 3)
            piece = alphabet[int(rng.integers(0, len(alphabet)))]
            if action == 0:
                text = text[:at] + piece + text[at:]
            elif action == 1:
                text = text[:at] + text[at + int(rng.integers(1, 4)) :]
            else:
                text = text[:at] + piece + text[at + 1 :]
        data = text.encode()
        fast = _outcome(_parse_aperio_fast, data)
        if fast is not None:
            used_fast += 1
            assert fast == _outcome(_parse_aperio_tree, data), text
    assert used_fast > 100


# --------------------------------------------------------------------------- worker processes


def test_worker_processes_give_the_same_dataset_and_problems(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(monuseg, "_POOL_MIN_BYTES", 0)  # small data: force the pool
    good, bad = tmp_path / "good", tmp_path / "bad"
    write_handmade_dataset(good)
    write_bad_dataset(bad)
    in_process = load_monuseg(good, workers=1)
    pooled = load_monuseg(good, workers=2)
    pd.testing.assert_frame_equal(pooled.manifest, in_process.manifest)
    assert dict(zip(pooled.manifest["id"], pooled.manifest["mask_sha256"], strict=True)) == (
        HANDMADE_MASK_SHA256
    )
    for sample_id, mask in in_process.masks.items():
        np.testing.assert_array_equal(pooled.masks[sample_id], mask)
        np.testing.assert_array_equal(pooled.images[sample_id], in_process.images[sample_id])
    with pytest.raises(DatasetValidationError) as info:
        load_monuseg(bad, workers=3)
    assert _relative_problems(info.value.problems, bad) == BAD_DATASET_PROBLEMS


def test_workers_must_be_positive(tmp_path: Path) -> None:
    write_handmade_dataset(tmp_path)
    with pytest.raises(ValueError, match="workers"):
        load_monuseg(tmp_path, workers=0)
    assert 1 <= monuseg.default_workers() <= 4
