"""The retraining record: what was new, what trained, the scores, the decision and why.

Written as JSON (``data/08_reporting/<dataset>/retraining/<UTC time>.json`` and
``latest.json``) and Markdown (``latest.md``). The run's report shows the same section:
the reporting pipeline reads ``latest.json`` (catalog ``retraining_record``), so a report
rebuilt later (``dvc repro``, ``kedro run --pipelines reporting``) keeps it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sa2_pipeline.io_utils import atomic_write_text
from sa2_pipeline.reporting.report import retraining_items

__all__ = ["markdown_section", "write_record"]


def write_record(folder: str | os.PathLike[str], record: dict[str, Any]) -> Path:
    """Write ``record`` as ``<folder>/<finished>.json`` and ``latest.json``; return the first."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = str(record.get("finished", "record")).replace(":", "").replace("+0000", "Z")
    text = json.dumps(record, indent=2, sort_keys=True, default=str)
    path = folder / f"{stamp}.json"
    atomic_write_text(path, text)
    atomic_write_text(folder / "latest.json", text)
    atomic_write_text(folder / "latest.md", markdown_section(record))
    return path


def markdown_section(record: dict[str, Any]) -> str:
    """The ``## Retraining`` section of the report."""
    return "## Retraining\n\n" + "\n".join(f"- {item}" for item in retraining_items(record)) + "\n"
