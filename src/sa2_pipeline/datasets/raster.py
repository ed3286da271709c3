"""Reading, checking and resizing 2D rasters (images and label masks). No torch here.

:func:`read_raster` decodes a file as stored (TIFF with tifffile, everything else with
OpenCV); the converters below turn what was decoded into the canonical forms, or raise
``ValueError`` with the reason, which the verifier reports next to the file's path:

- :func:`rgb_uint8`: an RGB(A) uint8 image as RGB;
- :func:`label_image_2d`: a label image as ``(H, W)``;
- :func:`limit_side`: an image and its mask downscaled together.

Checks on the file itself (for example a size limit read from the header before
decoding) belong in :func:`read_raster`; checks on label values belong with the mask
converters of each adapter.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["label_image_2d", "limit_side", "read_raster", "read_tiff", "rgb_uint8"]


def read_raster(path: Path) -> np.ndarray:
    """Read a 2D raster image as stored, in RGB(A) channel order.

    TIFF files are read with tifffile (first series; planar ``(C, H, W)`` is moved to
    ``(H, W, C)``), everything else with OpenCV ``IMREAD_UNCHANGED`` (so 16-bit PNGs stay
    16-bit and a grey BMP stays single-channel), BGR(A) reordered to RGB(A). JPEG EXIF
    orientation is not applied: pixels are taken as stored, like their masks.

    Args:
        path: Image file.

    Returns:
        ``(H, W)`` or ``(H, W, C)`` array of the file's dtype.

    Raises:
        ValueError: The file cannot be decoded; the message is the reason.
    """
    path = Path(path)
    if path.suffix.lower() in {".tif", ".tiff"}:
        image, _ = read_tiff(path)
        while image.ndim > 2 and image.shape[0] == 1:
            image = image[0]
        if image.ndim == 3 and image.shape[0] in (3, 4) and image.shape[-1] not in (3, 4):
            image = np.moveaxis(image, 0, -1)
    else:
        image = _read_with_opencv(path)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3) or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"expected a 2D image, got an array of shape {image.shape}")
    return np.ascontiguousarray(image)


def read_tiff(path: Path) -> tuple[np.ndarray, str]:
    """The first series of a TIFF file and its axes string (e.g. ``"YXS"``), as stored.

    Raises:
        ValueError: Not a readable TIFF (``"unreadable TIFF: ..."``).
    """
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise ValueError("unreadable TIFF: no image data")
            series = tif.series[0]
            return series.asarray(), series.axes
    except ValueError as err:
        if str(err).startswith("unreadable TIFF"):
            raise
        raise ValueError(f"unreadable TIFF: {err}") from err
    except Exception as err:  # tifffile/codecs raise many types (zlib.error, struct.error, ...)
        raise ValueError(f"unreadable TIFF: {type(err).__name__}: {err}") from err


def _read_with_opencv(path: Path) -> np.ndarray:
    """A non-TIFF file through ``cv2.imdecode`` (``IMREAD_UNCHANGED``), in RGB(A) order."""
    import cv2

    try:
        data = np.fromfile(path, dtype=np.uint8)  # also handles non-ASCII paths
    except OSError as err:
        raise ValueError(f"unreadable image file: {err}") from err
    kind = path.suffix.lstrip(".").upper() or "image"
    try:
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    except cv2.error as err:  # e.g. a header claiming more pixels than OpenCV allows
        if "CV_IO_MAX_IMAGE_PIXELS" in str(err):
            raise ValueError(
                f"unreadable {kind}: its header claims more than OpenCV's limit of "
                f"{_max_pixels()} pixels (CV_IO_MAX_IMAGE_PIXELS); a corrupt or hostile file"
            ) from err
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise ValueError(f"unreadable {kind}: OpenCV cannot decode the file ({reason})") from err
    if image is None:
        raise ValueError(f"unreadable {kind}: OpenCV cannot decode the file")
    if image.ndim == 3 and image.shape[-1] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if image.ndim == 3 and image.shape[-1] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
    return image


def _max_pixels() -> int:
    """OpenCV's decode limit: ``CV_IO_MAX_IMAGE_PIXELS`` if set, else its default 2**30."""
    import os

    try:
        return int(os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS", str(1 << 30)))
    except ValueError:
        return 1 << 30


def rgb_uint8(image: np.ndarray, note: str = "") -> np.ndarray:
    """An RGB or RGBA uint8 image as RGB ``(H, W, 3)`` (alpha dropped), contiguous.

    Args:
        image: A decoded image.
        note: Appended to the shape error (why other images are refused here).

    Raises:
        ValueError: Not uint8, or not 3 or 4 channels; the message is the reason.
    """
    if image.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {image.dtype} (shape {image.shape})")
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise ValueError(
            f"expected an RGB or RGBA image (H, W, 3|4), got shape {image.shape}{note}"
        )
    return np.ascontiguousarray(image[..., :3])


def label_image_2d(image: np.ndarray) -> np.ndarray:
    """A label image as ``(H, W)``: single-channel as is, grey RGB(A) reduced to one channel.

    Raises:
        ValueError: A colour image (channels differ) or a non-integer one; the message
            is the reason.
    """
    if not np.issubdtype(image.dtype, np.integer):
        raise ValueError(f"expected an integer label image, got pixel type {image.dtype}")
    if image.ndim == 2:
        return image
    rgb = image[..., :3]
    if (rgb == rgb[..., :1]).all():
        return np.ascontiguousarray(rgb[..., 0])
    raise ValueError(
        f"expected a single-channel label image, got a colour image of shape {image.shape} "
        "whose channels differ"
    )


#: Most objects an instance map may hold (stored as uint16).
MAX_INSTANCES = 65_535


def instance_labels(labels: np.ndarray) -> np.ndarray:
    """Canonical instance map: ids renumbered 1..n in order of first id, as uint16.

    Args:
        labels: Integer label image ``(H, W)``: 0 = background, one id per object (any
            unsigned or signed integer type, ids need not be consecutive).

    Raises:
        ValueError: Negative ids, or more than :data:`MAX_INSTANCES` objects.
    """
    from skimage.segmentation import relabel_sequential

    labels = label_image_2d(np.asarray(labels))
    if labels.size and labels.min() < 0:
        raise ValueError(f"negative instance ids (min {int(labels.min())})")
    ids = np.unique(labels)
    n_objects = int(np.count_nonzero(ids))
    if n_objects > MAX_INSTANCES:
        raise ValueError(f"{n_objects} objects; an instance map holds at most {MAX_INSTANCES}")
    return relabel_sequential(labels.astype(np.int64))[0].astype(np.uint16)


def limit_side(image: np.ndarray, mask: np.ndarray,
               max_side: int) -> tuple[np.ndarray, np.ndarray]:
    """Downscale an image and its label mask so the longer side is at most ``max_side``.

    The image is area-averaged (no aliasing), the mask takes the nearest label (labels
    are never blended). Pairs already small enough are returned as they are.
    """
    import cv2

    if max_side < 1:
        raise ValueError(f"max_side must be >= 1, got {max_side}")
    height, width = mask.shape
    if max(height, width) <= max_side:
        return image, mask
    scale = max_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))  # cv2: (W, H)
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    if small.ndim == 2:  # cv2 drops a trailing channel axis of size 1
        small = small[..., None]
    return small, cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
