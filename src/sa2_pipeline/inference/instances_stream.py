"""Objects (nuclei) of a slide found band by band, exactly as evaluation finds them.

The slide's foreground arrives as bands of rows at the level the model ran at, top to
bottom (:mod:`~sa2_pipeline.inference.streaming`). :class:`InstanceStream` keeps a buffer
of recent rows and hands on every object once, whole, as soon as it is final:

- Objects are cut by the one rule of evaluation,
  :func:`sa2_pipeline.metrics.instances.separate_instances` (``evaluation.instances``:
  watershed on the distance transform or plain components, ``min_size``, connectivity).
  That rule works one connected component at a time, so the stream works on whole
  connected components too.
- A component is *finished* when it does not reach the buffer's last :data:`CONTEXT`
  rows (or the slide has ended): no later row can join it, and the rows below it that its
  distance transform may need are present. Finished components are cut into objects,
  written once and marked done; unfinished ones wait for more rows. An object that
  crosses a band seam (or a tile seam: the bands come out of the blended window, which has
  no seams) is therefore one object with its whole outline.
- Rows above the highest unfinished component are final; the buffer keeps
  :data:`CONTEXT` of them above it and drops the rest. Memory grows with the width times
  the tallest object plus twice :data:`CONTEXT`, never with the slide's height.

Equality with the in-memory rule (tested for several band heights) holds when every
foreground pixel's nearest background pixel lies within :data:`CONTEXT` rows, i.e. for
objects whose inscribed radius is under :data:`CONTEXT` px at the inference level (nuclei
are 3-15 px in radius at 0.25-0.5 um/px). An object taller than ``max_rows`` (a runaway
mask; fewer rows on a wide slide, :data:`MAX_BUFFER_PIXELS`) is cut at the buffer's bottom
rather than letting memory grow, with a warning.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from sa2_pipeline.config import InstanceConfig
from sa2_pipeline.metrics.instances import separate_instances

logger = logging.getLogger(__name__)

#: Rows of context kept above and required below an object before it is cut (level px).
CONTEXT = 64
#: An unfinished component taller than this many rows is cut where the buffer ends...
MAX_ROWS = 2048
#: ... or than this many pixels of buffer (rows x width): on a slide 20,000 px wide the
#: cut comes after 838 rows, so the buffer stays within a few hundred MB.
MAX_BUFFER_PIXELS = 2048 * 8192


@dataclass(frozen=True)
class SlideObject:
    """One object at the inference level: ``mask`` is its pixels in the box whose
    top-left pixel is ``(left, top)``."""

    id: int
    top: int
    left: int
    mask: np.ndarray
    mean_probability: float
    class_id: int

    @property
    def area(self) -> int:
        return int(self.mask.sum())


class InstanceStream:
    """Objects of a ``width`` x ``height`` level, fed band by band (module docstring).

    :meth:`add` and :meth:`finish` return ``(objects, label_bands)``: the objects that
    became final, and ``(first_row, uint32 rows)`` of the instance-label image whose
    labels became final (object ids, 0 = background), in row order.
    """

    def __init__(self, width: int, height: int, cfg: InstanceConfig | None = None, *,
                 context: int = CONTEXT, max_rows: int = MAX_ROWS) -> None:
        self.width, self.height = width, height
        self.cfg = cfg or InstanceConfig()
        self.context = context
        self.max_rows = max(min(max_rows, MAX_BUFFER_PIXELS // max(width, 1)), 4 * context)
        self.start = 0  # slide row of buffer row 0
        self.fg = np.zeros((0, width), dtype=bool)
        self.prob = np.zeros((0, width), dtype=np.float32)
        self.cls = np.zeros((0, width), dtype=np.uint8)
        self.done = np.zeros((0, width), dtype=bool)
        self.ids = np.zeros((0, width), dtype=np.uint32)
        self.labels_emitted = 0  # slide rows of the label image handed on
        self.count = 0

    def add(self, first_row: int, foreground: np.ndarray, probability: np.ndarray,
            classes: np.ndarray | None = None):
        """Add slide rows ``[first_row, first_row + h)``: ``foreground`` bool ``(h, W)``,
        the foreground ``probability`` ``(h, W)``, and for multi-class models the class
        index of each pixel."""
        if first_row != self.start + len(self.fg):
            raise ValueError(f"rows must arrive in order: expected row "
                             f"{self.start + len(self.fg)}, got {first_row}")
        cls = (np.where(foreground, 1, 0) if classes is None else classes).astype(np.uint8)
        self.fg = np.concatenate([self.fg, foreground.astype(bool)])
        self.prob = np.concatenate([self.prob, probability.astype(np.float32)])
        self.cls = np.concatenate([self.cls, cls])
        self.done = np.concatenate([self.done, np.zeros(foreground.shape, dtype=bool)])
        self.ids = np.concatenate([self.ids, np.zeros(foreground.shape, dtype=np.uint32)])
        return self._step(final=self.start + len(self.fg) >= self.height)

    def finish(self):
        """Everything still buffered (the slide has ended)."""
        return self._step(final=True)

    def _step(self, final: bool):
        from scipy import ndimage
        from skimage.measure import label

        rows = len(self.fg)
        force = not final and rows > self.max_rows
        if force:
            logger.warning("an object is taller than %d rows at the inference level: it is "
                           "cut at row %d", self.max_rows, self.start + rows)
        components = label(self.fg, connectivity=self.cfg.connectivity)
        count = int(components.max())
        objects: list[SlideObject] = []
        waiting_top = rows
        if count:
            done = np.bincount(components[self.done], minlength=count + 1)[1:] > 0
            boxes = ndimage.find_objects(components)
            tops, bottoms = np.array([[b[0].start, b[0].stop] for b in boxes]).T
            ready = ~done & (final | force | (bottoms + self.context <= rows))
            waiting = ~done & ~ready
            if waiting.any():
                waiting_top = int(tops[waiting].min())
            if ready.any():
                # the rows of the ready components, and one more each side for their
                # distance transforms (metrics.instances._component_distance)
                r0 = max(int(tops[ready].min()) - 1, 0)
                r1 = min(int(bottoms[ready].max()) + 1, rows)
                keep = np.zeros(count + 1, dtype=bool)
                keep[1:] = ready
                part = components[r0:r1]
                chosen = np.where(keep[part], part, 0)
                objects = self._cut(chosen, r0)
                self.done[r0:r1] |= chosen > 0
        safe = rows if final or force else waiting_top
        label_bands = []
        if self.start + safe > self.labels_emitted:
            a = self.labels_emitted - self.start
            label_bands.append((self.labels_emitted, self.ids[a:safe].copy()))
            self.labels_emitted = self.start + safe
        # after a forced cut nothing is kept: the rest of the runaway object starts anew
        keep = safe if force else max(safe - self.context, 0)
        if keep:
            for name in ("fg", "prob", "cls", "done", "ids"):
                setattr(self, name, getattr(self, name)[keep:])
            self.start += keep
        return objects, label_bands

    def _cut(self, chosen: np.ndarray, first: int) -> list[SlideObject]:
        """Objects of the components ``chosen`` (labels of buffer rows from ``first``)."""
        from scipy import ndimage

        rows = slice(first, first + len(chosen))
        labels = separate_instances(self.fg[rows], chosen, self.cfg)
        boxes = ndimage.find_objects(labels)
        found = [(b[0].start + first, b[1].start, value + 1, b) for value, b in
                 enumerate(boxes) if b is not None]
        ids, cls, prob = self.ids[rows], self.cls[rows], self.prob[rows]
        objects = []
        for top, left, value, box in sorted(found):
            pixels = labels[box] == value
            self.count += 1
            ids[box][pixels] = self.count
            classes = np.bincount(cls[box][pixels], minlength=2)
            classes[0] = 0
            objects.append(SlideObject(
                id=self.count, top=self.start + top, left=left, mask=pixels,
                mean_probability=float(prob[box][pixels].mean()),
                class_id=int(classes.argmax())))
        return objects
