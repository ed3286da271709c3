"""The embedded default dataset: synthetic H&E nuclei tiles in the MoNuSeg raw format.

No dataset can be downloaded at run time, so the default run generates one and reads it
back through the real MoNuSeg adapter (:mod:`sa2_pipeline.datasets.monuseg`). The files
are what the MoNuSeg 2018 archives hold: RGB uint8 TIFF tiles and Aperio ImageScope XML
with one polygon per nucleus, in the same folders.

How a tile is made (all randomness from one :class:`numpy.random.Generator` per tile,
spawned from the seed, so the same seed gives byte-identical files with the same library
versions on the same platform; OpenCV's SIMD paths may differ in the last bit elsewhere):

1. Nuclei: perturbed-ellipse polygons (radius about 4-12 px, a share of small round
   lymphocyte-like ones), placed by rejection sampling on a smooth density field until a
   per-tile foreground target (15-35 %) is met, allowed to touch and overlap. Vertices
   are rounded to the 3 decimals written to the XML *before* rasterising, so the ground
   truth mask is exactly what the adapter rebuilds from the XML.
2. Stain concentrations, Beer-Lambert style: eosin (stroma with low-frequency variation,
   wavy fibrous streaks, occasional white gaps, unannotated red blood cells, cytoplasm
   around nuclei) and hematoxylin (faint in stroma with unannotated smudges and
   purple-tinged cytoplasm; strong inside the rasterised nucleus mask, scaled per nucleus
   with some pale nuclei, chromatin texture, darker rim, some vesicular nuclei).
3. Optical density -> RGB with per-tile perturbed stain vectors, then Gaussian blur and
   noise.

Tile names and seeds: the embedded set is ``SYN-TRAIN-000`` ... and ``SYN-TEST-000`` ...,
tile k of the run drawing from ``SeedSequence(seed).spawn(...)[k]`` (as it always has, so
its files and their DVC hashes do not change). Tiles under any other name (another
``prefix``, or numbering from ``start`` > 0) draw from the seed and their own name,
``SeedSequence(seed, spawn_key=<name's bytes>)``: a tile's content then depends only on
the seed and its name, and new names never repeat an existing tile. ``add=True`` writes
such tiles next to an existing dataset (new slides for a retraining trial).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import tifffile
from skimage.draw import polygon as draw_polygon
from skimage.segmentation import find_boundaries

from sa2_pipeline.datasets.monuseg import (
    TEST_DIR,
    TRAIN_ANNOTATION_DIR,
    TRAIN_IMAGE_DIR,
    format_aperio_xml,
)
from sa2_pipeline.io_utils import apply_umask, atomic_directory, named_os_error

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_PREFIX",
    "ensure_synthetic_monuseg",
    "generate_synthetic_monuseg",
    "render_synthetic_tile",
]

#: Tile names of the embedded set: ``SYN-TRAIN-000`` ...
DEFAULT_PREFIX = "SYN"
_PREFIX_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}")
#: ``os.link`` errors that mean "no hard links on this file system".
_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS}

# Stain optical-density directions (R, G, B absorbance), between the Ruifrok & Johnston
# reference and typical Macenko estimates on TCGA slides; perturbed per tile.
_HEMATOXYLIN_OD = np.array([0.600, 0.720, 0.350], dtype=np.float32)
_EOSIN_OD = np.array([0.180, 0.850, 0.460], dtype=np.float32)
_COORD_DECIMALS = 3  # precision of the XML coordinates
_MIN_NUCLEUS_PIXELS = 6


# --------------------------------------------------------------------------- noise fields


def _smooth_field(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    """Zero-mean, unit-std random field varying over about ``scale`` pixels."""
    n = max(2, int(np.ceil(size / scale)) + 2)
    coarse = rng.standard_normal((n, n), dtype=np.float32)
    field = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    return (field - field.mean()) / (field.std() + 1e-6)


def _blurred_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """White noise blurred by ``sigma``, renormalised to unit std."""
    noise = rng.standard_normal((size, size), dtype=np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), sigma)
    return (noise - noise.mean()) / (noise.std() + 1e-6)


def _line_kernel(length: int, angle: float) -> np.ndarray:
    """Normalised motion-blur kernel: a line of ``length`` px at ``angle`` radians."""
    kernel = np.zeros((length, length), dtype=np.float32)
    c = (length - 1) / 2
    dx, dy = np.cos(angle) * c, np.sin(angle) * c
    cv2.line(
        kernel, (round(c - dx), round(c - dy)), (round(c + dx), round(c + dy)), 1.0, 1, cv2.LINE_AA
    )
    return kernel / kernel.sum()


def _fibres(rng: np.random.Generator, size: int) -> np.ndarray:
    """Collagen-like texture in [0, 1]: noise smeared along wavy, locally varying lines."""
    angle = rng.uniform(0, np.pi)
    weight = 1 / (1 + np.exp(-2 * _smooth_field(rng, size, size / 2)))  # where each dominates
    out = np.zeros((size, size), dtype=np.float32)
    for k, w in enumerate((weight, 1 - weight)):
        noise = _blurred_noise(rng, size, 0.7)
        kernel = _line_kernel(int(rng.integers(17, 29)), angle + k * rng.uniform(-0.7, 0.7))
        out += w * cv2.filter2D(noise, -1, kernel, borderType=cv2.BORDER_REFLECT)
    # Bend the straight streaks with a smooth displacement field.
    amplitude = rng.uniform(3.0, 9.0)
    grid = np.arange(size, dtype=np.float32)
    map_x = grid[None, :] + amplitude * _smooth_field(rng, size, size / 4)
    map_y = grid[:, None] + amplitude * _smooth_field(rng, size, size / 4)
    out = cv2.remap(out, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    out = (out - out.mean()) / (out.std() + 1e-6)
    return 1 / (1 + np.exp(-1.6 * out))


# --------------------------------------------------------------------------- nuclei


@dataclass(frozen=True)
class _TileStyle:
    """Per-tile random parameters."""

    foreground_target: float
    mean_radius: float
    lymphocyte_share: float
    pale_share: float
    spacing: float  # min centre distance as a fraction of the radius sum (< 1: overlap)
    hematoxylin: float
    eosin: float
    chromatin: float
    vesicular_share: float
    blur_sigma: float
    noise_sigma: float
    gap_threshold: float  # high = few white gaps
    red_cells: int


def _draw_style(rng: np.random.Generator) -> _TileStyle:
    return _TileStyle(
        foreground_target=float(rng.uniform(0.15, 0.35)),
        mean_radius=float(rng.uniform(5.5, 8.5)),
        lymphocyte_share=float(rng.uniform(0.0, 0.35)),
        pale_share=float(rng.uniform(0.10, 0.30)),
        spacing=float(rng.uniform(0.72, 0.95)),
        hematoxylin=float(rng.uniform(0.85, 1.35)),
        eosin=float(rng.uniform(0.30, 0.60)),
        chromatin=float(rng.uniform(0.18, 0.38)),
        vesicular_share=float(rng.uniform(0.0, 0.4)),
        blur_sigma=float(rng.uniform(0.6, 1.6)),
        noise_sigma=float(rng.uniform(1.5, 4.5)),
        gap_threshold=float(rng.uniform(1.2, 3.5)),
        red_cells=int(rng.integers(0, 12)) if rng.random() < 0.5 else 0,
    )


def _nucleus_polygons(
    rng: np.random.Generator,
    centres: np.ndarray,
    radii: np.ndarray,
    roundness: np.ndarray,
    n_vertices: int,
) -> np.ndarray:
    """Perturbed ellipses of area about pi * radius^2.

    Args:
        rng: Random generator.
        centres: ``(N, 2)`` x, y centres.
        radii: ``(N,)`` equivalent radii.
        roundness: ``(N,)`` minor/major axis ratios in (0, 1].
        n_vertices: Vertices per polygon.

    Returns:
        ``(N, n_vertices, 2)`` x, y vertices.
    """
    n, k = len(radii), n_vertices
    phi = np.sort((np.arange(k) + rng.uniform(-0.3, 0.3, (n, k))) * (2 * np.pi / k), axis=1)
    harmonics = np.arange(2, 6)[None, :, None]
    amplitudes = rng.normal(0, 1, (n, 4, 1)) * (0.10 / harmonics)
    phases = rng.uniform(0, 2 * np.pi, (n, 4, 1))
    r = 1 + (amplitudes * np.cos(harmonics * phi[:, None, :] + phases)).sum(axis=1)
    r += rng.normal(0, 0.015, (n, k))  # small boundary wiggle like hand-drawn outlines
    a = (radii / np.sqrt(roundness))[:, None]
    b = (radii * np.sqrt(roundness))[:, None]
    theta = rng.uniform(0, np.pi, (n, 1))
    ex, ey = a * r * np.cos(phi), b * r * np.sin(phi)
    x = centres[:, :1] + ex * np.cos(theta) - ey * np.sin(theta)
    y = centres[:, 1:] + ex * np.sin(theta) + ey * np.cos(theta)
    return np.stack([x, y], axis=-1)


def _quantise(vertices: np.ndarray, size: int) -> np.ndarray:
    """Clip to the image extent and round exactly as the XML text will be parsed back."""
    # np.round gives the double nearest to k / 10**d, which "%.{d}f" prints as exactly that
    # decimal and float() parses back to the same double: the XML round trip is lossless.
    return np.round(np.clip(vertices, 0.0, float(size)), _COORD_DECIMALS) + 0.0


def _candidates(
    rng: np.random.Generator, size: int, style: _TileStyle, density: np.ndarray, n_vertices: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One batch of candidate nuclei: ``(centres, radii, kinds, quantised polygons)``."""
    batch = 32
    candidates = rng.uniform(-3, size + 3, (batch, 2))
    cols = np.clip(candidates[:, 0].astype(int), 0, size - 1)
    rows = np.clip(candidates[:, 1].astype(int), 0, size - 1)
    candidates = candidates[rng.random(batch) < density[rows, cols]]
    m = len(candidates)
    lymphocyte = rng.random(m) < style.lymphocyte_share
    radius = np.where(
        lymphocyte,
        rng.uniform(3.8, 5.2, m),
        np.clip(style.mean_radius * rng.lognormal(0, 0.22, m), 4.0, 12.0),
    )
    roundness = np.where(lymphocyte, rng.uniform(0.8, 1.0, m), rng.uniform(0.4, 0.95, m))
    vesicular = ~lymphocyte & (radius > 7) & (rng.random(m) < style.vesicular_share)
    kind = np.where(lymphocyte, 1, np.where(vesicular, 2, 0))
    shapes = _quantise(_nucleus_polygons(rng, candidates, radius, roundness, n_vertices), size)
    return candidates, radius, kind, shapes


def _place_nuclei(
    rng: np.random.Generator, size: int, style: _TileStyle, gaps: np.ndarray
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Sample nucleus polygons until the foreground target is met.

    Returns:
        ``(polygons, instances, kinds)``: quantised polygons; int32 instance labels
        (polygon i -> i + 1, later overwrite earlier, as the adapter rasterises them);
        per-polygon kind (0 = ordinary, 1 = lymphocyte-like, 2 = vesicular).
    """
    density = 1 / (1 + np.exp(-2.5 * (_smooth_field(rng, size, size / 3) + 0.3)))
    density *= 1 - gaps
    target = style.foreground_target * size * size
    covered = 0
    instances = np.zeros((size, size), dtype=np.int32)
    polygons: list[np.ndarray] = []
    kinds: list[int] = []
    capacity = 4096
    centres = np.empty((capacity, 2))
    radii = np.empty(capacity)
    n_vertices = int(rng.integers(18, 33))
    max_batches = 2 * int(target / (np.pi * style.mean_radius**2) + 10)
    for _ in range(max_batches):
        if covered >= target:
            break
        candidates, radius, kind, shapes = _candidates(rng, size, style, density, n_vertices)
        for j in range(len(candidates)):
            n = len(polygons)
            if covered >= target or n >= capacity:
                break
            cx, cy = candidates[j]
            if n:
                dist2 = (centres[:n, 0] - cx) ** 2 + (centres[:n, 1] - cy) ** 2
                if (dist2 < (style.spacing * (radii[:n] + radius[j])) ** 2).any():
                    continue
            vertices = shapes[j]
            rr, cc = draw_polygon(vertices[:, 1], vertices[:, 0], shape=(size, size))
            if len(rr) < _MIN_NUCLEUS_PIXELS:
                continue
            covered += int((instances[rr, cc] == 0).sum())
            centres[n] = cx, cy
            radii[n] = radius[j]
            polygons.append(vertices)
            instances[rr, cc] = len(polygons)
            kinds.append(int(kind[j]))
    return polygons, instances, np.array(kinds, dtype=np.int8)


# --------------------------------------------------------------------------- rendering


def _stain_vector(rng: np.random.Generator, reference: np.ndarray) -> np.ndarray:
    v = np.clip(reference + rng.normal(0, 0.03, 3).astype(np.float32), 0.01, None)
    return v / np.linalg.norm(v)


def _eosin(
    rng: np.random.Generator, size: int, style: _TileStyle, gaps: np.ndarray, inside: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Eosin concentration (before the nuclei dim it) and the cytoplasm halo."""
    # Eosin: stroma with slow stain variation and fibres; white gaps; pink cytoplasm halo.
    low = _smooth_field(rng, size, size / 2.5)
    eosin = style.eosin * (1 + 0.22 * low) * (0.72 + 0.56 * _fibres(rng, size))
    eosin *= 1 - 0.92 * gaps
    halo = cv2.GaussianBlur(inside.astype(np.float32), (0, 0), rng.uniform(2.5, 4.5))
    eosin += style.eosin * 0.5 * halo
    for _ in range(style.red_cells):  # red blood cells: dense eosin discs, not annotated
        cx, cy = rng.integers(0, size, 2)
        if not inside[cy, cx]:
            disc = np.zeros((size, size), dtype=np.uint8)
            cv2.circle(disc, (int(cx), int(cy)), int(rng.integers(4, 7)), 1, -1, cv2.LINE_AA)
            eosin += disc.astype(np.float32) * rng.uniform(0.5, 0.9)
    return eosin, halo


def _hematoxylin(
    rng: np.random.Generator,
    size: int,
    style: _TileStyle,
    gaps: np.ndarray,
    halo: np.ndarray,
    instances: np.ndarray,
    kinds: np.ndarray,
) -> np.ndarray:
    """Hematoxylin concentration: stroma, smudges, and the nuclei with their texture."""
    inside = instances > 0
    # Hematoxylin: faint in stroma (with unannotated smudges), strong in nuclei.
    hema = 0.06 + 0.04 * _smooth_field(rng, size, size / 3)
    smudge = 1 / (1 + np.exp(-4 * (_smooth_field(rng, size, 12) - 1.6)))
    hema += rng.uniform(0.15, 0.35) * smudge * (1 - gaps)
    hema += rng.uniform(0.0, 0.25) * halo  # basophilic (purple-tinged) cytoplasm
    n = len(kinds)
    strength = rng.normal(1.0, 0.14, n + 1).astype(np.float32)
    pale = rng.random(n + 1) < style.pale_share
    strength[pale] = rng.uniform(0.3, 0.55, int(pale.sum()))
    strength[1:][kinds == 1] *= 1.25
    strength[0] = 0.0
    chromatin = 0.6 * _blurred_noise(rng, size, 0.8) + 0.4 * _blurred_noise(rng, size, 1.8)
    edges = find_boundaries(instances, mode="inner")
    rim = cv2.GaussianBlur(edges.astype(np.float32), (0, 0), 0.7)
    # Vesicular nuclei: open chromatin, pale centre, dark membrane.
    depth = cv2.distanceTransform((inside & ~edges).astype(np.uint8), cv2.DIST_L2, 3)
    vesicular = np.concatenate([[False], kinds == 2])[instances]
    hollow = np.where(vesicular, 0.55 + 0.45 * np.exp(-depth / 1.5), 1.0)
    nuclear = (
        style.hematoxylin
        * strength[instances]
        * hollow
        * (1 + style.chromatin * chromatin + 0.35 * rim)
    )
    return np.where(inside, np.maximum(nuclear, 0.05), np.maximum(hema, 0.0))


def _stains_to_rgb(
    rng: np.random.Generator, style: _TileStyle, hema: np.ndarray, eosin: np.ndarray
) -> np.ndarray:
    """Beer-Lambert: stain concentrations -> RGB uint8, blurred, with sensor noise."""
    h_vec = _stain_vector(rng, _HEMATOXYLIN_OD)
    e_vec = _stain_vector(rng, _EOSIN_OD)
    od = hema[..., None] * h_vec + eosin[..., None] * e_vec + 0.02
    od = cv2.GaussianBlur(od.astype(np.float32), (0, 0), style.blur_sigma)
    rgb = 255.0 * np.exp(-od)
    rgb += style.noise_sigma * rng.standard_normal(rgb.shape, dtype=np.float32)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def render_synthetic_tile(
    rng: np.random.Generator, size: int = 256
) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """Render one synthetic H&E tile and its nucleus polygons.

    Args:
        rng: Random generator (consumed).
        size: Tile side in pixels.

    Returns:
        ``(image, polygons, instances)``: RGB uint8 ``(size, size, 3)``; ``(K, 2)``
        float64 ``(x, y)`` polygons already rounded to the XML precision; int32 instance
        labels rasterised from those polygons (the mask the image was rendered from).
    """
    style = _draw_style(rng)
    gaps = 1 / (1 + np.exp(-4 * (_smooth_field(rng, size, size / 4) - style.gap_threshold)))
    polygons, instances, kinds = _place_nuclei(rng, size, style, gaps)
    inside = instances > 0

    eosin, halo = _eosin(rng, size, style, gaps, inside)
    hema = _hematoxylin(rng, size, style, gaps, halo, instances, kinds)
    eosin = np.where(inside, 0.3 * eosin, eosin)
    image = _stains_to_rgb(rng, style, hema, eosin)
    return image, polygons, instances


# --------------------------------------------------------------------------- files


def _has_files(root: Path) -> bool:
    """Whether ``root`` is or contains anything other than (nested) empty directories."""
    if root.is_symlink() or (root.exists() and not root.is_dir()):
        return True
    if not root.exists():
        return False
    for _, _, filenames in os.walk(root):
        if filenames:
            return True
    return any(p.is_symlink() for p in root.rglob("*"))


def _remove_empty_tree(root: Path) -> None:
    """Remove a tree of empty directories (``rmdir`` refuses anything non-empty)."""
    for dirpath, _, _ in sorted(os.walk(root), key=lambda item: -len(item[0])):
        os.rmdir(dirpath)


def _check_arguments(
    n_train: int, n_test: int, image_size: int, prefix: str, start: int, add: bool
) -> None:
    """Refuse arguments out of range (before anything is written)."""
    if n_test < 0 or n_train < (0 if add else 1) or n_train + n_test < 1:
        least = "n_train + n_test must be >= 1" if add else "n_train must be >= 1"
        raise ValueError(
            f"{least} and n_test >= 0, got n_train={n_train}, n_test={n_test}"
        )
    if image_size < 32:
        raise ValueError(f"image_size must be >= 32 pixels, got {image_size}")
    if not _PREFIX_PATTERN.fullmatch(prefix):
        raise ValueError(
            f"prefix must be 1-40 letters, digits, '_' or '-' (not first), got {prefix!r}"
        )
    if start < 0:
        raise ValueError(f"start must be >= 0, got {start}")


def _check_target(root: Path) -> None:
    """Refuse a ``root`` that holds files; clear a tree of empty folders."""
    if _has_files(root):
        raise ValueError(
            f"{root}: already contains files; refusing to write synthetic data into it "
            "(add=True writes new tiles next to them)"
        )
    if root.exists():
        _remove_empty_tree(root)


def _tile_paths(split: str, stem: str) -> tuple[Path, Path]:
    """Image and annotation paths of one tile, relative to the dataset root."""
    if split == "train":
        return TRAIN_IMAGE_DIR / f"{stem}.tif", TRAIN_ANNOTATION_DIR / f"{stem}.xml"
    return TEST_DIR / f"{stem}.tif", TEST_DIR / f"{stem}.xml"


def _plan(
    n_train: int, n_test: int, seed: int, prefix: str, start: int
) -> list[tuple[str, str, np.random.SeedSequence]]:
    """``(split, stem, seed sequence)`` of every tile, training tiles first."""
    tiles = [("train", start + i) for i in range(n_train)]
    tiles += [("test", start + i) for i in range(n_test)]
    stems = [f"{prefix}-{split.upper()}-{index:03d}" for split, index in tiles]
    if prefix == DEFAULT_PREFIX and start == 0:  # the embedded set, byte for byte as before
        seeds = np.random.SeedSequence(seed).spawn(len(tiles))
    else:  # keyed by name: never the stream of an embedded tile (1-element spawn keys)
        seeds = [np.random.SeedSequence(seed, spawn_key=tuple(stem.encode())) for stem in stems]
    return [(split, stem, sq) for (split, _), stem, sq in zip(tiles, stems, seeds, strict=True)]


def _write_tile(
    tmp: Path, split: str, stem: str, seed: np.random.SeedSequence, image_size: int
) -> tuple[list[Path], float]:
    """Render and write one tile + XML under ``tmp``: their relative paths, foreground."""
    image_rel, xml_rel = _tile_paths(split, stem)
    image, polygons, instances = render_synthetic_tile(np.random.default_rng(seed), image_size)
    (tmp / image_rel).parent.mkdir(parents=True, exist_ok=True)
    (tmp / xml_rel).parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(tmp / image_rel, image, photometric="rgb", metadata=None)
    xml_text = format_aperio_xml(polygons, decimals=_COORD_DECIMALS)
    (tmp / xml_rel).write_text(xml_text, encoding="utf-8")
    return [image_rel, xml_rel], float((instances > 0).mean())


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _place_new(source: Path, target: Path) -> None:
    """Put ``source`` at ``target`` unless ``target`` exists (then FileExistsError)."""
    appeared = FileExistsError(f"{target}: appeared while the new tiles were written")
    try:
        os.link(source, target)  # atomic and never replaces an existing name
    except FileExistsError:
        raise appeared from None
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        if os.path.lexists(target):  # a file system without hard links: check, then rename
            raise appeared from None
        os.rename(source, target)


def _add_files(root: Path, relative: list[Path], build: Path) -> None:
    """Move the files built under ``build`` into ``root``: all of them, or none.

    Every target was checked to be absent; should one appear meanwhile, or a move fail,
    the files and folders placed so far are removed again and the error raised. (A
    process killed while linking, a few milliseconds, leaves the files linked so far;
    a rerun then names them.)
    """
    placed: list[Path] = []
    made: list[Path] = []
    try:
        for rel in relative:
            _fsync(build / rel)
        for rel in relative:
            for folder in reversed(rel.parents[:-1]):  # below root, outermost first
                if not (root / folder).exists():
                    (root / folder).mkdir()
                    made.append(root / folder)
            _place_new(build / rel, root / rel)
            placed.append(root / rel)
        for folder in {(root / rel).parent for rel in relative} | {p.parent for p in made}:
            _fsync(folder)
    except BaseException as exc:
        for path in reversed(placed):
            path.unlink(missing_ok=True)
        for folder in reversed(made):
            with contextlib.suppress(OSError):  # not empty: someone else wrote there
                folder.rmdir()
        if isinstance(exc, OSError) and not isinstance(exc, FileExistsError):
            raise named_os_error(exc, root) from exc
        raise


def _generate_tiles(
    root: Path, plan: list[tuple[str, str, np.random.SeedSequence]], image_size: int
) -> tuple[list[Path], list[float]]:
    """Write the planned tiles as a new dataset ``root`` (all of them, or none)."""
    _check_target(root)
    relative: list[Path] = []
    fractions: list[float] = []
    with atomic_directory(root) as tmp:
        for split, stem, sq in plan:
            written, fraction = _write_tile(tmp, split, stem, sq, image_size)
            relative += written
            fractions.append(fraction)
    return relative, fractions


def _add_tiles(
    root: Path, plan: list[tuple[str, str, np.random.SeedSequence]], image_size: int
) -> tuple[list[Path], list[float]]:
    """Write the planned tiles into the existing dataset ``root``, next to its files."""
    relative = [rel for split, stem, _ in plan for rel in _tile_paths(split, stem)]
    taken: dict[Path, dict[str, Path]] = {}  # folder -> stem -> a file of that stem
    for folder in {rel.parent for rel in relative}:
        if (root / folder).is_dir():
            taken[folder] = {p.stem: p for p in (root / folder).iterdir()}
    # Same name, or same stem under another suffix (NEW-TRAIN-000.tiff): one sample id.
    clashes = list(dict.fromkeys(
        root / rel if os.path.lexists(root / rel) else taken[rel.parent][rel.stem]
        for rel in relative if rel.stem in taken.get(rel.parent, {})
    ))
    if clashes:
        listed = ", ".join(str(p) for p in clashes[:4]) + (" ..." if len(clashes) > 4 else "")
        raise FileExistsError(
            f"{root}: {len(clashes)} of the new tiles' files already exist, nothing written "
            f"(choose another prefix or start): {listed}"
        )
    try:
        build = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".add.tmp",
                                      dir=root.parent))
        apply_umask(build, directory=True)
    except OSError as exc:
        raise named_os_error(exc, root) from exc
    try:
        fractions = []
        for split, stem, sq in plan:
            fractions.append(_write_tile(build, split, stem, sq, image_size)[1])
        _add_files(root, relative, build)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return relative, fractions


def generate_synthetic_monuseg(
    root: Path,
    *,
    n_train: int,
    n_test: int,
    image_size: int,
    seed: int,
    prefix: str = DEFAULT_PREFIX,
    start: int = 0,
    add: bool = False,
) -> list[Path]:
    """Write a synthetic H&E nuclei dataset in the MoNuSeg 2018 raw layout.

    Files are built in a temporary sibling folder and renamed to ``root`` when all are
    written, so ``root`` is either absent or complete. Tiles are named
    ``<prefix>-TRAIN-<start>`` ... and ``<prefix>-TEST-<start>`` ... (three digits at
    least; ``SYN-TRAIN-000`` ... by default).

    With ``add=True`` the tiles are written next to the files already in ``root`` (new
    slides for a retraining trial): only new files, none if any of their names exists
    (the error names them), and all of them or none (built aside, then linked into
    place; a failure removes what was placed). Tiles under names other than the default
    ones draw from the seed and their name, so they differ from every embedded tile.

    Args:
        root: Dataset root to create; must be missing or hold no files (empty folders
            are replaced), unless ``add``.
        n_train: Training tiles (``MoNuSeg 2018 Training Data/``).
        n_test: Test tiles (``MoNuSegTestData/``).
        image_size: Tile side in pixels.
        seed: Random seed; the same seed writes byte-identical files.
        prefix: Tile name prefix (letters, digits, ``_``, ``-``).
        start: Number of the first tile of each split.
        add: Add to an existing dataset instead of refusing a ``root`` with files;
            ``n_train`` may then be 0.

    Returns:
        The written files (final paths), training tiles first, each ``.tif`` then ``.xml``.

    Raises:
        ValueError: ``root`` already holds files (and not ``add``), or an argument is out
            of range.
        FileExistsError: ``add`` and a file of a new tile already exists (nothing written).
    """
    root = Path(root)
    _check_arguments(n_train, n_test, image_size, prefix, start, add)
    plan = _plan(n_train, n_test, seed, prefix, start)
    started = time.perf_counter()
    adding = add and _has_files(root)
    write = _add_tiles if adding else _generate_tiles
    relative, fractions = write(root, plan, image_size)
    logger.info(
        "%s synthetic MoNuSeg at %s: %d train + %d test tiles %s-*-%03d... of %dx%d, seed %d, "
        "foreground %.2f-%.2f, in %.1f s",
        "Added to" if adding else "Generated", root, n_train, n_test, prefix, start,
        image_size, image_size, seed, min(fractions), max(fractions),
        time.perf_counter() - started,
    )
    return [root / rel for rel in relative]


def ensure_synthetic_monuseg(root: Path, **kwargs: int | str) -> bool:
    """Generate the synthetic dataset at ``root`` unless something is already there.

    Never overwrites or adds to existing data: if ``root`` holds any file (a user's real
    download, or an earlier generation) nothing is written.

    Args:
        root: Dataset root.
        **kwargs: Passed to :func:`generate_synthetic_monuseg` (``n_train``, ``n_test``,
            ``image_size``, ``seed``, ``prefix``, ``start``; not ``add``).

    Returns:
        True if the dataset was generated now, False if ``root`` already held files.
    """
    root = Path(root)
    if _has_files(root):
        logger.info("Raw data present at %s; not generating the synthetic dataset", root)
        return False
    try:
        generate_synthetic_monuseg(root, **kwargs)
    except FileExistsError:  # another process finished first
        logger.info("Raw data appeared at %s while generating; kept it", root)
        return False
    return True
