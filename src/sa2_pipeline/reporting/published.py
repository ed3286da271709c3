"""Published test scores to show beside ours (Dice % / IoU %), per paper dataset.

Source and caveats: docs/protocol.md, "Published numbers to compare with". ``None`` means
no published SA2-Net figure was found for that dataset. Published numbers come from the
paper's protocol (224² resized masks); ours are at native resolution unless the run used
that protocol (then the ``dice_224`` columns are the comparable ones).
"""

from __future__ import annotations

from typing import Any

#: dataset -> {"sa2net": (dice %, iou %) or None, "baselines": {name: (dice %, iou %)}}
PUBLISHED: dict[str, dict[str, Any]] = {
    "glas": {
        "sa2net": (91.38, 84.90),
        "sa2net_spread": "± 0.4 / ± 0.6",
        "baselines": {
            "UCTransNet": (90.18, 82.96),
            "nnU-Net v2": (89.71, 84.52),
            "U-Net": (85.45, 74.78),
        },
        "source": "table reprinted in InceptionMamba (arXiv 2506.12208), by the same group",
    },
    "isic2018": {
        "sa2net": None,
        "baselines": {
            "UCTransNet": (88.98, 87.29),
            "nnU-Net v2": (88.63, 86.91),
            "U-Net": (86.71, 84.91),
        },
        "source": "table reprinted in InceptionMamba (arXiv 2506.12208)",
    },
    "segpc2021": {
        "sa2net": None,
        "baselines": {"UCTransNet": (91.74, 91.59), "nnU-Net v2": (91.44, 90.93)},
        "source": "table reprinted in InceptionMamba (arXiv 2506.12208)",
    },
    "monuseg": {
        "sa2net": None,
        "baselines": {"UCTransNet (reproductions)": (77.0, None)},
        "note": "reproductions of UCTransNet report 76-78 % Dice",
        "source": "UCTransNet issue tracker",
    },
    "acdc": {"sa2net": None, "baselines": {}, "source": "none found"},
}


def published_for(dataset: str) -> dict[str, Any] | None:
    """The published entry of a paper dataset, or ``None`` for any other dataset."""
    return PUBLISHED.get(dataset)
