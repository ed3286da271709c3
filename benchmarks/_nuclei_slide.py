"""A generated slide with nuclei, and a benchmark network fitted to find them.

The whole-slide benchmark needs a mask like a trained model's: nuclei, most of them
single, many in touching pairs. With random weights SA2-Net calls the whole tissue
foreground, and the object stream then handles one giant object instead of 10^5 nuclei.
So the slide is drawn with nuclei (:func:`bench_slide_objects.nuclei`: disks of radius
4-9 px at 0.5 um/px, 60 % in touching pairs, inside a stained disc over 40 % of the
slide), and the benchmark's network (same architecture, same size) is fitted for a few
hundred steps on crops drawn the same way, in the parent process, before the timed
children run. Its weights go to the children as a file; the network's cost per tile does
not depend on its weights.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

GLASS = 236
STROMA = np.array([190, 95, 165])
NUCLEUS = np.array([85, 45, 125])


class NucleiSlide:
    """Level-0 geometry of the slide: the tissue disc and the nuclei in it."""

    def __init__(self, size: int, density: float = 2500.0, seed: int = 0) -> None:
        from bench_slide_objects import nuclei

        self.size = size
        self.radius = (0.4 * size * size / np.pi) ** 0.5
        cy, cx, r = nuclei(size, density, seed)
        order = np.argsort(cy)
        self.cy, self.cx, self.r = cy[order], cx[order], r[order]

    def render(self, x0: int, y0: int, w: int, h: int, scale: int = 1,
               seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """RGB ``uint8 (h, w, 3)`` and nucleus mask of the region at ``(x0, y0)`` of the
        level ``scale`` times smaller than level 0."""
        rng = np.random.default_rng([seed, x0, y0, scale])
        yy, xx = np.mgrid[y0 : y0 + h, x0 : x0 + w].astype(np.float32) * scale
        half = self.size / 2
        tissue = (yy - half) ** 2 + (xx - half) ** 2 < self.radius**2
        image = np.full((h, w, 3), GLASS, dtype=np.float32)
        image[tissue] = STROMA
        alpha = np.zeros((h, w), dtype=np.float32)
        mask = np.zeros((h, w), dtype=bool)
        top, bottom = y0 * scale - 10, (y0 + h) * scale + 10
        a, b = np.searchsorted(self.cy, [top, bottom])
        for cy, cx, r in zip(self.cy[a:b], self.cx[a:b], self.r[a:b], strict=True):
            if not x0 * scale - 10 <= cx <= (x0 + w) * scale + 10:
                continue
            cyl, cxl, rl = cy / scale - y0, cx / scale - x0, r / scale
            r0, r1 = max(int(cyl - rl) - 1, 0), min(int(cyl + rl) + 2, h)
            c0, c1 = max(int(cxl - rl) - 1, 0), min(int(cxl + rl) + 2, w)
            if r1 <= r0 or c1 <= c0:
                continue
            py, px = np.mgrid[r0:r1, c0:c1]
            d = np.hypot(py - cyl, px - cxl)
            np.maximum(alpha[r0:r1, c0:c1], np.clip(rl + 0.5 - d, 0, 1),
                       out=alpha[r0:r1, c0:c1])
            mask[r0:r1, c0:c1] |= d < rl
        image = image * (1 - alpha[..., None]) + NUCLEUS * alpha[..., None]
        image += rng.integers(-20, 21, (h, w, 1)) + rng.integers(-6, 7, (h, w, 3))
        return image.clip(0, 255).astype(np.uint8), mask

    def write(self, path: Path, tile: int = 512) -> float:
        """A JPEG-tiled pyramidal TIFF at 0.5 um/px, written tile by tile; returns the
        tissue's area fraction."""
        import tifffile

        levels = [self.size]
        while levels[-1] > 2048:
            levels.append(-(-levels[-1] // 2))

        def tiles(level: int, scale: int):
            for y in range(0, level, tile):
                for x in range(0, level, tile):
                    yield self.render(x, y, tile, tile, scale)[0]

        options = {"tile": (tile, tile), "compression": "jpeg",
                   "compressionargs": {"level": 90}, "photometric": "rgb",
                   "dtype": np.uint8}
        with tifffile.TiffWriter(path, bigtiff=True) as tif:
            tif.write(tiles(self.size, 1), shape=(self.size, self.size, 3),
                      subifds=len(levels) - 1, resolution=(1e4 / 0.5, 1e4 / 0.5),
                      resolutionunit="CENTIMETER", **options)
            for k, level in enumerate(levels[1:], start=1):
                tif.write(tiles(level, 2**k), shape=(level, level, 3), subfiletype=1,
                          **options)
        return float(np.pi * self.radius**2 / self.size**2)

    def crops(self, count: int, side: int, rng: np.random.Generator):
        """``count`` random crops inside (and at the edge of) the tissue: images
        ``float32 (count, 3, side, side)`` in [0, 1] and masks ``(count, 1, side, side)``."""
        images, masks = [], []
        for _ in range(count):
            angle, dist = rng.uniform(0, 2 * np.pi), self.radius * np.sqrt(rng.uniform(0, 1.1))
            x = int(self.size / 2 + dist * np.cos(angle)) - side // 2
            y = int(self.size / 2 + dist * np.sin(angle)) - side // 2
            image, mask = self.render(x, y, side, side, seed=int(rng.integers(1 << 30)))
            images.append(image.transpose(2, 0, 1) / np.float32(255))
            masks.append(mask[None])
        return np.stack(images).astype(np.float32), np.stack(masks).astype(np.float32)


def fit(model, slide: NucleiSlide, steps: int, *, side: int = 128, batch: int = 8,
        seed: int = 0) -> dict[str, float]:
    """Fit ``model`` (logits out) to the slide's nuclei: Adam, BCE + soft Dice; returns
    the losses, the held-out Dice at threshold 0.5 and the seconds taken."""
    import torch

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model.train()
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    start, losses = time.perf_counter(), []
    for _ in range(steps):
        x, y = (torch.from_numpy(a) for a in slide.crops(batch, side, rng))
        logits = model(x)
        if isinstance(logits, tuple):  # deep supervision in training mode: the main head
            logits = logits[0]
        prob = torch.sigmoid(logits)
        dice = 1 - (2 * (prob * y).sum() + 1) / (prob.sum() + y.sum() + 1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y) + dice
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    model.eval()
    x, y = (torch.from_numpy(a) for a in slide.crops(16, 256, np.random.default_rng(99)))
    with torch.inference_mode():
        pred = (torch.sigmoid(model(x)) > 0.5).float()
    held_out = float(2 * (pred * y).sum() / (pred.sum() + y.sum()).clamp_min(1))
    return {"steps": steps, "first_loss": round(losses[0], 4) if losses else None,
            "last_loss": round(float(np.mean(losses[-10:])), 4) if losses else None,
            "held_out_dice": round(held_out, 4), "seconds": round(time.perf_counter() - start, 1)}
