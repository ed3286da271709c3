"""What a segmented slide leaves behind: the mask file, its object statistics, an overlay.

Masks arrive as bands of rows, top to bottom, at the slide's full size (level 0); nothing
here holds the whole mask unless it is small.

- **Mask file.** Up to :data:`PNG_MAX_PIXELS` pixels: one PNG. Larger: a tiled (512 x 512),
  deflate-compressed, pyramidal TIFF (tifffile): level 0 at the slide's size and
  half-size levels as SubIFDs, each made by taking every second row and column of the
  level above. Binary masks are stored as 0/255 (viewable), multi-class masks as class
  indices.
- **OME-TIFF.** The same pyramid with OME-XML (channel name, ``PhysicalSizeX/Y`` in um),
  for the mask (uint8) and the instance labels (uint32): :func:`write_ome_tiff`.
- **Several files in one pass.** :class:`BandSink` runs a pull-style writer in a thread
  and lets the slide loop push bands to it.
- **Overlay.** A thumbnail of the slide with the foreground tinted and the objects
  outlined (:class:`ObjectOutlines`).
- :class:`ObjectCounter` (plain 8-connected components joined across bands) is not what
  the slide path counts any more: objects come from
  :mod:`~sa2_pipeline.inference.instances_stream`, evaluation's rule.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from sa2_pipeline.io_utils import apply_umask, process_alive, remove_stale_temporaries

#: Masks up to this many pixels are written as PNG; larger ones as pyramidal TIFF.
PNG_MAX_PIXELS = 4096 * 4096
TIFF_TILE = 512


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """A temporary sibling of ``final`` to write; renamed onto ``final`` on success.

    The name follows :func:`sa2_pipeline.io_utils.atomic_write_bytes` (``.<name>.<pid>-*.tmp``)
    so the leftovers of a killed writer are cleaned up by the next write of the same file.
    """

    final.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.{os.getpid()}-", suffix=".tmp",
                                dir=final.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        apply_umask(tmp)  # mkstemp made it 0600; the output is as readable as any file
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    remove_stale_temporaries(final)


class ObjectCounter:
    """8-connected foreground components of a mask given band by band (module docstring)."""

    def __init__(self) -> None:
        self.parent: list[int] = [0]
        self.areas: list[int] = [0]
        self.previous: np.ndarray | None = None  # global labels of the last row seen
        self.foreground = 0
        self.pixels = 0

    def _find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def add(self, band: np.ndarray) -> None:
        """Add rows ``(h, W)`` of the mask (any value > 0 is foreground)."""
        from scipy import ndimage

        fg = band > 0
        self.pixels += fg.size
        self.foreground += int(fg.sum())
        labels, count = ndimage.label(fg, structure=np.ones((3, 3), dtype=bool))
        offset = len(self.parent)
        self.parent.extend(range(offset, offset + count))
        self.areas.extend(np.bincount(labels.ravel(), minlength=count + 1)[1:].tolist())
        glob = np.where(labels > 0, labels + (offset - 1), 0)
        if self.previous is not None and count:
            self._join(self.previous, glob[0])
        self.previous = glob[-1].copy()

    def _join(self, above: np.ndarray, below: np.ndarray) -> None:
        pairs = []
        for shift in (-1, 0, 1):  # 8-connectivity across the band edge
            a = above[max(shift, 0) : len(above) + min(shift, 0)]
            b = below[max(-shift, 0) : len(below) + min(-shift, 0)]
            both = (a > 0) & (b > 0)
            pairs.append(np.stack([a[both], b[both]], axis=1))
        for i, j in np.unique(np.concatenate(pairs), axis=0):
            ri, rj = self._find(int(i)), int(self._find(int(j)))
            if ri != rj:
                self.parent[rj] = ri
                self.areas[ri] += self.areas[rj]
                self.areas[rj] = 0

    def object_areas(self) -> np.ndarray:
        """Area (px) of every object, in order of first appearance."""
        roots = [i for i in range(1, len(self.parent)) if self._find(i) == i]
        return np.asarray([self.areas[i] for i in roots], dtype=np.int64)


class ThumbnailMask:
    """A nearest-neighbour thumbnail of the mask, filled as bands of rows pass."""

    def __init__(self, size: tuple[int, int], thumb_size: tuple[int, int]) -> None:
        width, height = size
        tw, th = thumb_size
        self.rows = np.minimum(((np.arange(th) + 0.5) * height / th).astype(np.int64), height - 1)
        self.cols = np.minimum(((np.arange(tw) + 0.5) * width / tw).astype(np.int64), width - 1)
        self.mask = np.zeros((th, tw), dtype=np.uint8)

    def add(self, first_row: int, band: np.ndarray) -> None:
        inside = (self.rows >= first_row) & (self.rows < first_row + band.shape[0])
        if inside.any():
            self.mask[inside] = band[self.rows[inside] - first_row][:, self.cols]


class ObjectOutlines:
    """Object outlines drawn on a thumbnail-sized canvas as the objects stream past."""

    def __init__(self, size0: tuple[int, int], thumb_size: tuple[int, int]) -> None:
        self.fx, self.fy = thumb_size[0] / size0[0], thumb_size[1] / size0[1]
        self.canvas = np.zeros((thumb_size[1], thumb_size[0]), dtype=np.uint8)

    def add(self, outline) -> None:
        """Draw ``outline`` (shapely, level-0 px) scaled to the thumbnail."""
        import cv2

        polygons = getattr(outline, "geoms", [outline])
        rings = [np.round(np.asarray(p.exterior.coords) * (self.fx, self.fy)).astype(np.int32)
                 for p in polygons if not p.is_empty]
        cv2.polylines(self.canvas, rings, True, 255, 1)


def overlay_png(thumbnail: np.ndarray, mask: np.ndarray,
                outlines: np.ndarray | None = None) -> bytes:
    """PNG bytes of ``thumbnail`` (RGB) with ``mask > 0`` tinted green and outlined: the
    objects' own outlines where ``outlines`` (a canvas of :class:`ObjectOutlines`) is
    given, else the foreground's."""
    import cv2

    image = thumbnail.astype(np.float32)
    fg = mask > 0
    image[fg] = 0.55 * image[fg] + 0.45 * np.array([0, 255, 0], dtype=np.float32)
    out = np.ascontiguousarray(np.clip(image, 0, 255).astype(np.uint8))
    if outlines is not None:
        out[outlines > 0] = (255, 255, 0)
    else:
        contours, _ = cv2.findContours(fg.astype(np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, (255, 255, 0), 1)
    ok, png = cv2.imencode(".png", cv2.cvtColor(out, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("could not encode the overlay")
    return png.tobytes()


def mask_file_name(stem: str, size: tuple[int, int]) -> str:
    """``<stem>.png`` for a small mask, ``<stem>.tif`` for a large one."""
    return f"{stem}.png" if size[0] * size[1] <= PNG_MAX_PIXELS else f"{stem}.tif"


def write_mask(path: Path, bands: Iterator[tuple[int, np.ndarray]], size: tuple[int, int],
               *, mpp: float | None = None) -> None:
    """Write the mask (uint8 rows, top to bottom) atomically: PNG or pyramidal TIFF."""
    with atomic_path(path) as tmp:
        if path.suffix == ".png":
            _write_png(tmp, bands, size)
        else:
            _write_pyramid(tmp, bands, size, mpp)


def _write_png(tmp: Path, bands: Iterator[tuple[int, np.ndarray]], size: tuple[int, int]):
    import cv2

    width, height = size
    mask = np.zeros((height, width), dtype=np.uint8)
    for first, band in bands:
        mask[first : first + band.shape[0]] = band
    ok, png = cv2.imencode(".png", mask)
    if not ok:
        raise RuntimeError(f"could not encode a {width}x{height} mask as PNG")
    tmp.write_bytes(png.tobytes())


#: The pyramid writer's scratch folders: ``.pyramid-<pid>-<random>`` beside the mask.
SCRATCH_PREFIX = ".pyramid-"


def remove_stale_scratch(folder: Path) -> list[Path]:
    """Delete the scratch folders that killed pyramid writers left in ``folder`` (those of
    processes that no longer run; a live writer's, and this process's, are kept). A
    SIGKILLed 20,000² write leaves about 130 MB there; the next write cleans it up."""
    removed = []
    for candidate in folder.glob(f"{SCRATCH_PREFIX}*"):
        pid_text = candidate.name[len(SCRATCH_PREFIX):].split("-", 1)[0]
        if (not candidate.is_dir() or candidate.is_symlink() or not pid_text.isdigit()
                or int(pid_text) == os.getpid() or process_alive(int(pid_text))):
            continue
        shutil.rmtree(candidate, ignore_errors=True)
        removed.append(candidate)
    return removed


def _pyramid_sizes(size: tuple[int, int]) -> list[tuple[int, int]]:
    """Half-size levels (``ceil``) while the level is larger than one tile, at most 6."""
    sizes = []
    width, height = size
    while max(width, height) > TIFF_TILE and len(sizes) < 6:
        width, height = -(-width // 2), -(-height // 2)
        sizes.append((width, height))
    return sizes


def write_ome_tiff(path: Path, bands: Iterator[tuple[int, np.ndarray]], size: tuple[int, int],
                   *, mpp: float | None, channel: str, dtype=np.uint8) -> None:
    """Write rows (top to bottom) atomically as a tiled, pyramidal OME-TIFF.

    The OME-XML names the channel and, when ``mpp`` is known, gives ``PhysicalSizeX/Y`` in
    um (the TIFF resolution tags say the same in px/cm, on every level), so QuPath, napari
    (and bioio) open it at the right scale. Levels as in :func:`write_mask`.
    """
    with atomic_path(path) as tmp:
        _write_pyramid(tmp, bands, size, mpp, dtype=dtype, channel=channel)


def _write_pyramid(tmp: Path, bands, size: tuple[int, int], mpp: float | None,
                   dtype=np.uint8, channel: str | None = None) -> None:
    """The pyramid; ``channel`` set: an OME-TIFF whose only channel it names."""
    import tifffile

    dtype = np.dtype(dtype)
    width, height = size
    levels = _pyramid_sizes(size)
    remove_stale_scratch(tmp.parent)
    with tempfile.TemporaryDirectory(dir=tmp.parent,
                                     prefix=f"{SCRATCH_PREFIX}{os.getpid()}-") as scratch:
        level_files = [Path(scratch, f"level{k + 1}.raw") for k in range(len(levels))]
        handles = [open(f, "wb") for f in level_files]  # noqa: SIM115 - closed below
        try:
            tiles = _level0_tiles(bands, width, handles, dtype)
            ome = channel is not None
            with tifffile.TiffWriter(tmp, bigtiff=width * height * dtype.itemsize > 2**31,
                                     ome=ome) as tif:
                options = {"tile": (TIFF_TILE, TIFF_TILE), "compression": "zlib",
                           "photometric": "minisblack"}
                metadata = None
                if ome:
                    metadata = {"axes": "YX", "Name": channel, "Channel": {"Name": [channel]}}
                    if mpp is not None:
                        metadata.update({"PhysicalSizeX": mpp, "PhysicalSizeXUnit": "µm",
                                         "PhysicalSizeY": mpp, "PhysicalSizeYUnit": "µm"})
                tif.write(tiles, shape=(height, width), dtype=dtype, subifds=len(levels),
                          metadata=metadata, **options, **_resolution(mpp, 1))
                for handle in handles:
                    handle.close()
                for k, (lw, lh) in enumerate(levels):
                    tif.write(_raw_tiles(level_files[k], lw, lh, dtype), shape=(lh, lw),
                              dtype=dtype, subfiletype=1, **options,
                              **_resolution(mpp, width / lw))
        finally:
            for handle in handles:
                handle.close()


def _resolution(mpp: float | None, factor: float) -> dict:
    """TIFF resolution tags (px/cm) of a level ``factor`` times coarser than level 0."""
    if mpp is None:
        return {}
    return {"resolution": (1e4 / (mpp * factor), 1e4 / (mpp * factor)),
            "resolutionunit": "CENTIMETER"}


def _level0_tiles(bands, width: int, level_handles: list, dtype=np.uint8
                  ) -> Iterator[np.ndarray]:
    """Tiles of level 0 in row-major order; each full band of tile rows also feeds the
    smaller levels (every second row and column), appended to their raw files."""
    buffer = np.zeros((TIFF_TILE, width), dtype=dtype)
    filled = 0

    def flush(rows: np.ndarray) -> Iterator[np.ndarray]:
        level = rows
        for handle in level_handles:
            level = level[::2, ::2]
            handle.write(np.ascontiguousarray(level).tobytes())
        for x in range(0, width, TIFF_TILE):
            yield rows[:, x : x + TIFF_TILE].copy()  # the buffer is reused

    for _, band in bands:
        start = 0
        while start < band.shape[0]:
            take = min(TIFF_TILE - filled, band.shape[0] - start)
            buffer[filled : filled + take] = band[start : start + take]
            filled += take
            start += take
            if filled == TIFF_TILE:
                yield from flush(buffer)
                filled = 0
    if filled:
        yield from flush(buffer[:filled])


def _raw_tiles(path: Path, width: int, height: int, dtype=np.uint8) -> Iterator[np.ndarray]:
    """Tiles of a level stored as raw rows, read one band of tile rows at a time."""
    dtype = np.dtype(dtype)
    with open(path, "rb") as handle:
        for y in range(0, height, TIFF_TILE):
            rows = min(TIFF_TILE, height - y)
            band = np.frombuffer(handle.read(rows * width * dtype.itemsize),
                                 dtype=dtype).reshape(rows, width)
            for x in range(0, width, TIFF_TILE):
                yield band[:, x : x + TIFF_TILE]


class WriterAbortedError(RuntimeError):
    """The producer of a :class:`BandSink` failed; the file being written is discarded."""


class BandSink:
    """Runs ``write(bands)`` (a pull-style writer such as :func:`write_mask`) in a thread
    and lets the caller push the bands, so one pass over a slide feeds several files.

    :meth:`close` ends the stream and waits for the file; :meth:`abort` makes the writer's
    iterator raise :class:`WriterAbortedError`, so its atomic write leaves nothing behind. An
    error in the writer is raised in the caller by the next :meth:`put` or :meth:`close`.
    """

    _END, _ABORT = object(), object()

    def __init__(self, write) -> None:
        import queue
        import threading

        self.queue: queue.Queue = queue.Queue(maxsize=4)
        self.error: BaseException | None = None
        self.ended = False
        self.thread = threading.Thread(target=self._run, args=(write,), daemon=True)
        self.thread.start()

    def _bands(self) -> Iterator[tuple[int, np.ndarray]]:
        while True:
            item = self.queue.get()
            if item is self._END or item is self._ABORT:
                self.ended = True
                if item is self._ABORT:
                    raise WriterAbortedError("the slide was not finished")
                return
            yield item

    def _run(self, write) -> None:
        try:
            write(self._bands())
        except BaseException as err:  # noqa: BLE001 - handed to the caller
            self.error = err
            while not self.ended:  # keep draining so the producer never blocks
                item = self.queue.get()
                self.ended = item is self._END or item is self._ABORT

    def put(self, first: int, band: np.ndarray) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put((first, band))

    def close(self) -> None:
        self.queue.put(self._END)
        self.thread.join()
        if self.error is not None:
            raise self.error

    def abort(self) -> None:
        if self.thread.is_alive():
            self.queue.put(self._ABORT)
        self.thread.join()
