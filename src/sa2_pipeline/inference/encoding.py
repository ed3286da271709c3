"""The registered model's wire format: encoded images in, encoded masks out.

A request is a table with one row per image and one column, ``image``: the bytes of a PNG,
JPEG, BMP or TIFF file (8- or 16-bit, grey, RGB or RGBA). Over HTTP the bytes are base64
in JSON (MLflow decodes the ``binary`` column). The answer has one row per image: ``mask``
(base64 text of a PNG label mask, 0/1 for binary models, class indices otherwise),
``height``, ``width`` and ``foreground_fraction``.

Images are checked from their header *before* they are decoded, so a hostile request
cannot make the model allocate or compute much: each side must be at least
:data:`~sa2_pipeline.inference.slides.MIN_SIDE` px and the image at most
:data:`MAX_PIXELS` pixels. Decoding then goes through the ingestion reader and the
ingestion conversion to RGB uint8 (so a 16-bit image is scaled exactly as in training).
"""

from __future__ import annotations

import base64
import io
import tempfile
from pathlib import Path

import numpy as np

from sa2_pipeline.datasets.raster import read_raster
from sa2_pipeline.inference.slides import MIN_SIDE

#: Largest image (pixels) one request may carry: 64 Mpx, e.g. 8000 x 8000.
MAX_PIXELS = 64_000_000
#: Largest encoded image (bytes).
MAX_BYTES = 256 * 1024 * 1024

_MAGIC = {b"\x89PNG": ".png", b"\xff\xd8\xff": ".jpg", b"II*\x00": ".tif", b"MM\x00*": ".tif",
          b"II+\x00": ".tif", b"MM\x00+": ".tif", b"BM": ".bmp"}


class ImageRequestError(ValueError):
    """A request image that is refused; the message says why."""


def encode_image(image: np.ndarray) -> bytes:
    """PNG bytes of a uint8/uint16 grey or RGB(A) array (RGB order), for a request."""
    import cv2

    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR if arr.shape[-1] == 3 else cv2.COLOR_RGBA2BGRA)
    ok, png = cv2.imencode(".png", arr)
    if not ok:
        raise ValueError(f"cannot encode an array of shape {arr.shape} and dtype {arr.dtype}")
    return png.tobytes()


def encode_mask(mask: np.ndarray) -> str:
    """Base64 text of a PNG of a uint8 label mask."""
    import cv2

    ok, png = cv2.imencode(".png", np.ascontiguousarray(mask, dtype=np.uint8))
    if not ok:
        raise ValueError(f"cannot encode a mask of shape {mask.shape}")
    return base64.b64encode(png.tobytes()).decode("ascii")


def decode_mask(text: str) -> np.ndarray:
    """The uint8 label mask of a ``mask`` cell of the answer."""
    import cv2

    data = np.frombuffer(base64.b64decode(text), dtype=np.uint8)
    return cv2.imdecode(data, cv2.IMREAD_UNCHANGED)


def _suffix(data: bytes) -> str:
    for magic, suffix in _MAGIC.items():
        if data.startswith(magic):
            return suffix
    raise ImageRequestError(
        f"not a PNG, JPEG, BMP or TIFF file (starts with {data[:8]!r}); send the bytes of an "
        "encoded image, base64 in JSON")


def header_shape(data: bytes, suffix: str) -> tuple[int, ...]:
    """The stored array shape from the header, without decoding the pixels."""
    if suffix == ".tif":
        import tifffile

        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            if not tif.series:
                raise ImageRequestError("TIFF without image data")
            return tuple(int(s) for s in tif.series[0].shape)
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        width, height = img.size
        return (height, width, len(img.getbands()))


def check_shape(shape: tuple[int, ...]) -> None:
    """Refuse a stored shape that is not one 2D image within the size limits."""
    dims = list(shape)
    while len(dims) > 2 and dims[0] == 1:
        dims = dims[1:]
    if len(dims) == 3 and dims[0] in (3, 4) and dims[-1] not in (3, 4):
        dims = dims[1:]  # channels first
    if len(dims) not in (2, 3) or (len(dims) == 3 and dims[-1] > 4):
        raise ImageRequestError(f"expected one 2D image, got an array of shape {shape}")
    height, width = dims[0], dims[1]
    if min(height, width) < MIN_SIDE:
        raise ImageRequestError(
            f"image of shape {shape} is empty, too small or degenerate: each side must be "
            f"at least {MIN_SIDE} px")
    if height * width > MAX_PIXELS:
        raise ImageRequestError(
            f"image of shape {shape} has {height * width:,} pixels, over the limit of "
            f"{MAX_PIXELS:,}; segment large images with `sa2-pipeline segment` or the Kedro "
            "inference pipeline (whole slides, bounded memory)")


def decode_image(data: bytes) -> np.ndarray:
    """RGB uint8 ``(H, W, 3)`` of one request image, checked first (module docstring).

    Raises:
        ImageRequestError: Not an image, too large, too small, degenerate, or of a pixel
            type ingestion does not take (float, signed...).
    """
    from sa2_pipeline.datasets.folder import to_rgb_uint8

    if not isinstance(data, bytes | bytearray) or not data:
        raise ImageRequestError(f"expected the bytes of an encoded image, got "
                                f"{type(data).__name__} {str(data)[:40]!r}")
    if len(data) > MAX_BYTES:
        raise ImageRequestError(f"encoded image of {len(data):,} bytes is over {MAX_BYTES:,}")
    suffix = _suffix(bytes(data[:8]))
    try:
        shape = header_shape(bytes(data), suffix)
    except ImageRequestError:
        raise
    except Exception as err:  # noqa: BLE001 - PIL/tifffile raise many types
        raise ImageRequestError(f"unreadable {suffix[1:].upper()} header: {err}") from err
    check_shape(shape)
    with tempfile.TemporaryDirectory(prefix="sa2-request-") as tmp:
        path = Path(tmp, f"image{suffix}")
        path.write_bytes(data)
        try:
            image = to_rgb_uint8(read_raster(path))
        except ValueError as err:
            raise ImageRequestError(str(err)) from err
    return image
