"""Generated nuclei for the slide-object tests: disks, many touching in pairs, many
straddling the band seams of the tests."""

from __future__ import annotations

import numpy as np


def nuclei_probability(height: int, width: int, seed: int = 0, count: int = 60) -> np.ndarray:
    """``(H, W)`` float32 foreground probability of ``count`` disks (radius 5-11 px), half of
    them in touching pairs; smooth edges so that thresholds matter."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    prob = np.zeros((height, width), dtype=np.float32)
    for _ in range(count // 2):
        r1, r2 = rng.uniform(5, 11, size=2)
        cy, cx = rng.uniform(12, height - 12), rng.uniform(12, width - 30)
        angle = rng.uniform(0, np.pi)
        d = 0.85 * (r1 + r2)
        centres = [(cy, cx, r1), (cy + d * np.sin(angle), cx + d * np.cos(angle), r2)]
        for y, x, r in centres[: 1 + int(rng.random() < 0.7)]:
            disk = np.clip(r + 0.5 - np.hypot(yy - y, xx - x), 0, 1)
            prob = np.maximum(prob, disk.astype(np.float32))
    return prob
