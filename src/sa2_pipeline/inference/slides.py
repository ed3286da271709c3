"""Open images and whole-slide images lazily, pick a pyramid level, find the tissue.

Every input is opened as an :class:`ImageSource`: RGB uint8 pixels read region by region
from one pyramid level, never the whole slide at once.

- **Whole-slide images** -- Aperio SVS, pyramidal or tiled TIFF (JPEG, JPEG 2000, LZW,
  deflate tiles, decoded by imagecodecs), NDPI, SCN, BIF... -- are read with ``tiffslide``;
  the formats it cannot open (MRXS, VMS, VMU...) with OpenSlide (``openslide-bin``).
- **Plain images** -- PNG, JPEG, BMP, untiled TIFF, and every 16-bit image -- are decoded
  whole by the ingestion reader (:func:`sa2_pipeline.datasets.raster.read_raster`) and
  converted to RGB uint8 by the ingestion function
  (:func:`sa2_pipeline.datasets.folder.to_rgb_uint8`), so a 16-bit image is scaled exactly
  as it was for training. They are limited to :data:`MAX_WHOLE_PIXELS` pixels.

The tissue mask (:func:`tissue_mask`) is computed on a thumbnail: saturation of the
thumbnail (HSV S channel), Otsu's threshold, a small closing and opening. H&E tissue is
coloured and glass/background is grey-white, so saturation separates them; slides with no
contrast (all tissue, or fluorescence) fall back to "everything is tissue".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from sa2_pipeline.datasets.raster import read_raster

#: Smallest side (px) of an image the pipeline segments: smaller inputs carry too little
#: context for the network and are refused (an 8x8 image is an error, not a mask).
MIN_SIDE = 32
#: Plain (non-tiled) images are decoded whole; above this many pixels they are refused
#: (convert them to a tiled pyramidal TIFF, which is read region by region).
MAX_WHOLE_PIXELS = 20_000 * 20_000
#: Extensions read as plain images.
PLAIN_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp"})
#: TIFF-based extensions (tiffslide first).
TIFF_SUFFIXES = frozenset({".tif", ".tiff", ".svs", ".ndpi", ".scn", ".bif", ".qptiff"})
#: Formats only OpenSlide reads.
OPENSLIDE_SUFFIXES = frozenset({".mrxs", ".vms", ".vmu", ".svslide"})
SUPPORTED_SUFFIXES = PLAIN_SUFFIXES | TIFF_SUFFIXES | OPENSLIDE_SUFFIXES


class UnreadableImageError(ValueError):
    """An input that cannot be segmented; the message says why."""


class ImageSource(Protocol):
    """RGB uint8 pixels of one image, read lazily by level and region."""

    name: str
    #: ``(width, height)`` of every level, level 0 first (the slide's full size).
    level_dimensions: tuple[tuple[int, int], ...]
    #: Microns per pixel at level 0, ``None`` when the file does not say.
    mpp: float | None

    def read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """``uint8 (height, width, 3)`` of the region, in the level's own coordinates."""
        ...

    def thumbnail(self, max_side: int) -> np.ndarray:
        """``uint8 (h, w, 3)`` of the whole image with its longer side ``<= max_side``."""
        ...

    def close(self) -> None: ...


@dataclass
class ArraySource:
    """A decoded image held in memory (plain images)."""

    name: str
    image: np.ndarray
    mpp: float | None = None

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return ((self.image.shape[1], self.image.shape[0]),)

    def read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        if level != 0:
            raise IndexError(f"{self.name}: a plain image has one level, asked for {level}")
        return self.image[y : y + height, x : x + width]

    def thumbnail(self, max_side: int) -> np.ndarray:
        return _resize_to_fit(self.image, max_side)

    def close(self) -> None:
        pass


class SlideSource:
    """A whole-slide image read through tiffslide or OpenSlide (same API)."""

    def __init__(self, name: str, slide: object, mpp: float | None) -> None:
        self.name = name
        self._slide = slide
        self.mpp = mpp
        self.level_dimensions = tuple(
            (int(w), int(h)) for w, h in slide.level_dimensions  # type: ignore[attr-defined]
        )

    def read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        scale = self.level_dimensions[0][0] / self.level_dimensions[level][0]
        # Both readers take the region's origin in level-0 coordinates.
        origin = (int(round(x * scale)), int(round(y * scale)))
        region = self._slide.read_region(origin, level, (width, height))  # type: ignore[attr-defined]
        arr = np.asarray(region)
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=-1)
        if arr.dtype != np.uint8:
            raise UnreadableImageError(f"{self.name}: whole-slide pixels of type {arr.dtype} "
                                  "are not supported (8-bit RGB only)")
        return np.ascontiguousarray(arr[..., :3])

    def thumbnail(self, max_side: int) -> np.ndarray:
        # The smallest level at least max_side wide, resized: never decodes level 0 whole.
        width, height = self.level_dimensions[0]
        level = len(self.level_dimensions) - 1
        while level > 0 and max(self.level_dimensions[level]) < max_side:
            level -= 1
        lw, lh = self.level_dimensions[level]
        if lw * lh > 64_000_000:
            raise UnreadableImageError(
                f"{self.name}: {width}x{height} slide has no pyramid level small enough for a "
                f"thumbnail (smallest level {lw}x{lh}); write it as a pyramidal TIFF")
        return _resize_to_fit(self.read(level, 0, 0, lw, lh), max_side)

    def close(self) -> None:
        self._slide.close()  # type: ignore[attr-defined]


def _resize_to_fit(image: np.ndarray, max_side: int) -> np.ndarray:
    import cv2

    height, width = image.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    if scale == 1.0:
        return np.ascontiguousarray(image)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(np.ascontiguousarray(image), size, interpolation=cv2.INTER_AREA)


def open_image(path: str | Path) -> ImageSource:
    """Open one input lazily (see the module docstring for what reads what).

    Raises:
        UnreadableImageError: Missing, empty, unsupported, corrupt or too small; the message
            names the file and the reason.
    """
    path = Path(path)
    if not path.exists():
        raise UnreadableImageError(f"{path}: no such file")
    if not path.is_file():
        raise UnreadableImageError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise UnreadableImageError(f"{path}: empty file (0 bytes)")
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise UnreadableImageError(
            f"{path}: unsupported format {suffix or '(no extension)'!r}; supported: "
            f"{', '.join(sorted(SUPPORTED_SUFFIXES))}")
    if suffix in OPENSLIDE_SUFFIXES:
        source = _open_openslide(path)
    elif suffix in TIFF_SUFFIXES and _is_tiled_8bit_tiff(path):
        source = _open_tiffslide(path)
    else:
        source = _open_plain(path)
    width, height = source.level_dimensions[0]
    if min(width, height) < MIN_SIDE:
        source.close()
        raise UnreadableImageError(
            f"{path}: image of {width}x{height} px is too small to segment "
            f"(each side must be at least {MIN_SIDE} px)")
    return source


def _is_tiled_8bit_tiff(path: Path) -> bool:
    """True for a TIFF whose first image is tiled (or a multi-level pyramid) and 8-bit."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise UnreadableImageError(f"{path}: unreadable TIFF: no image data")
            series = tif.series[0]
            page = series.pages[0]
            tiled = bool(page.is_tiled) or len(series.levels) > 1
            return tiled and series.dtype == np.uint8 and series.ndim in (2, 3)
    except UnreadableImageError:
        raise
    except Exception as err:  # tifffile raises many types on a corrupt file
        raise UnreadableImageError(f"{path}: unreadable TIFF: {type(err).__name__}: {err}") from err


def _open_tiffslide(path: Path) -> ImageSource:
    import tiffslide

    try:
        slide = tiffslide.TiffSlide(path)
        source = SlideSource(str(path), slide, _mpp(slide.properties))
        source.read(len(source.level_dimensions) - 1, 0, 0, 1, 1)  # decodes one tile
    except UnreadableImageError:
        raise
    except Exception as err:  # noqa: BLE001 - codec and format errors of many types
        raise UnreadableImageError(
            f"{path}: unreadable whole-slide TIFF: {type(err).__name__}: {err}") from err
    return source


def _open_openslide(path: Path) -> ImageSource:
    try:
        import openslide

        slide = openslide.OpenSlide(str(path))
    except Exception as err:  # noqa: BLE001 - OpenSlideError, ImportError...
        raise UnreadableImageError(f"{path}: OpenSlide cannot open it: {err}") from err
    return SlideSource(str(path), slide, _mpp(slide.properties))


def _open_plain(path: Path) -> ImageSource:
    from sa2_pipeline.datasets.folder import to_rgb_uint8

    _check_plain_size(path)
    try:
        image = to_rgb_uint8(read_raster(path))
    except ValueError as err:
        raise UnreadableImageError(f"{path}: {err}") from err
    return ArraySource(str(path), image, _tiff_mpp(path))


def _check_plain_size(path: Path) -> None:
    """Refuse a plain image over MAX_WHOLE_PIXELS from its header, before decoding it."""
    shape: tuple[int, ...] | None = None
    if path.suffix.lower() in TIFF_SUFFIXES:
        import tifffile

        try:
            with tifffile.TiffFile(path) as tif:
                shape = tuple(tif.series[0].shape) if tif.series else None
        except Exception:  # noqa: BLE001 - the decoder reports it with its reason
            return
    if shape is not None and len(shape) >= 2:
        dims = sorted(shape, reverse=True)[:2]
        if dims[0] * dims[1] > MAX_WHOLE_PIXELS:
            raise UnreadableImageError(
                f"{path}: untiled image of shape {shape} is over {MAX_WHOLE_PIXELS:,} pixels; "
                "write it as a tiled pyramidal TIFF so it can be read region by region")


def _mpp(properties: dict) -> float | None:
    for key in ("tiffslide.mpp-x", "openslide.mpp-x", "aperio.MPP"):
        value = properties.get(key)
        try:
            mpp = float(value) if value is not None else math.nan
        except (TypeError, ValueError):
            continue
        if math.isfinite(mpp) and mpp > 0:
            return mpp
    return None


def _tiff_mpp(path: Path) -> float | None:
    """Microns per pixel from a plain TIFF's resolution tags (None for other files)."""
    if path.suffix.lower() not in TIFF_SUFFIXES:
        return None
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            tags = tif.pages[0].tags
            unit = tags["ResolutionUnit"].value
            num, den = tags["XResolution"].value
    except Exception:  # noqa: BLE001 - absent tags mean "unknown"
        return None
    per_unit = {2: 25_400.0, 3: 10_000.0}.get(int(unit))
    if per_unit is None or num <= 0:
        return None
    return per_unit * den / num


def choose_level(source: ImageSource, target_mpp: float | None) -> int:
    """The pyramid level whose pixel size is nearest ``target_mpp`` (log scale).

    Level 0 when either pixel size is unknown, or when the slide has one level.
    """
    if target_mpp is None or source.mpp is None or len(source.level_dimensions) == 1:
        return 0
    width0 = source.level_dimensions[0][0]
    errors = [abs(math.log(source.mpp * width0 / w / target_mpp))
              for w, _ in source.level_dimensions]
    return int(np.argmin(errors))


def tissue_mask(thumbnail: np.ndarray) -> np.ndarray:
    """Boolean tissue mask of an RGB thumbnail (Otsu on saturation; module docstring)."""
    import cv2
    from skimage.filters import threshold_otsu

    saturation = cv2.cvtColor(np.ascontiguousarray(thumbnail), cv2.COLOR_RGB2HSV)[..., 1]
    if int(saturation.max()) - int(saturation.min()) < 8:
        return np.ones(saturation.shape, dtype=bool)  # no contrast: treat all as tissue
    level = threshold_otsu(saturation)
    mask = (saturation > level).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
    return mask.astype(bool)


def tile_has_tissue(
    mask: np.ndarray, level_size: tuple[int, int], box: tuple[int, int, int, int]
) -> bool:
    """Whether a tile ``(x, y, w, h)`` of a level of ``level_size`` (w, h) touches tissue.

    The tile's box is mapped onto the thumbnail mask and grown by one thumbnail pixel, so a
    tile on the edge of the tissue is never skipped.
    """
    level_w, level_h = level_size
    mask_h, mask_w = mask.shape
    x, y, w, h = box
    x0 = max(int(math.floor(x * mask_w / level_w)) - 1, 0)
    y0 = max(int(math.floor(y * mask_h / level_h)) - 1, 0)
    x1 = min(int(math.ceil((x + w) * mask_w / level_w)) + 1, mask_w)
    y1 = min(int(math.ceil((y + h) * mask_h / level_h)) + 1, mask_h)
    return bool(mask[y0:y1, x0:x1].any())
