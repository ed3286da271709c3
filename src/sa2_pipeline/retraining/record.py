"""The retraining record: what was new, what trained, the scores, the decision and why.

Written as JSON (``data/08_reporting/<dataset>/retraining/<UTC time>.json`` and
``latest.json``) and as a Markdown section appended to the run's report.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["append_to_report", "markdown_section", "write_record"]


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_record(folder: str | os.PathLike[str], record: dict[str, Any]) -> Path:
    """Write ``record`` as ``<folder>/<finished>.json`` and ``latest.json``; return the first."""
    folder = Path(folder)
    stamp = str(record.get("finished", "record")).replace(":", "").replace("+0000", "Z")
    text = json.dumps(record, indent=2, sort_keys=True, default=str)
    path = folder / f"{stamp}.json"
    _atomic_write(path, text)
    _atomic_write(folder / "latest.json", text)
    _atomic_write(folder / "latest.md", markdown_section(record))
    return path


def _num(value: Any, fmt: str = "+.4f") -> str:
    return "n/a" if value is None else format(float(value), fmt)


def markdown_section(record: dict[str, Any]) -> str:
    """The ``## Retraining`` section of the report."""
    changes = record.get("changes", {})
    gate = record.get("gate") or {}
    reg = record.get("registration") or {}
    lines = [
        "## Retraining",
        "",
        f"- dataset: `{record.get('dataset')}`, started {record.get('started')}, "
        f"finished {record.get('finished')}",
        f"- new images: {len(changes.get('new', []))}, changed: "
        f"{len(changes.get('changed', []))}, removed: {len(changes.get('removed', []))}"
        f" ({', '.join((changes.get('new', []) + changes.get('changed', []))[:12])})",
        f"- data version: `{record.get('data', {}).get('data_version')}`"
        f" (DVC pushed: {record.get('data', {}).get('pushed')})",
        f"- trained: `{reg.get('model_name')}` version {reg.get('version')}"
        f" (run `{reg.get('run_id')}`), test Dice {_num(record.get('test_dice'), '.4f')}",
    ]
    if gate.get("delta") is not None:
        level = f"{100 * float(gate.get('confidence', 0.95)):g}%"
        lines.append(
            f"- challenger - champion, per-image Dice on the frozen test set (n = "
            f"{gate.get('n')}): {_num(gate.get('delta'))}, {level} interval "
            f"[{_num(gate.get('delta_low'))}, {_num(gate.get('delta_high'))}], one-sided "
            f"lower bound {_num(gate.get('lower_bound'))} (margin "
            f"{gate.get('margin')}), Wilcoxon p = {_num(gate.get('wilcoxon_p'), '.3g')}")
    lines.append(f"- decision: **{record.get('decision')}**: {record.get('reason')}")
    return "\n".join(lines) + "\n"


def append_to_report(report_dir: str | os.PathLike[str], record: dict[str, Any]) -> None:
    """Append the section to ``report.md`` and ``report.html`` (when they exist)."""
    section = markdown_section(record)
    md = Path(report_dir) / "report.md"
    if md.is_file():
        _atomic_write(md, md.read_text().rstrip() + "\n\n" + section)
    page = Path(report_dir) / "report.html"
    if page.is_file():
        body = "<h2>Retraining</h2><pre>" + html.escape(section.split("\n", 2)[-1]) + "</pre>"
        text = page.read_text()
        text = (text.replace("</body>", body + "</body>", 1) if "</body>" in text
                else text + body)
        _atomic_write(page, text)
