"""One run index over the parts of a split inference run (docs/kubeflow.md).

Parts (``inference.num_parts`` / ``part_id``, :mod:`sa2_pipeline.inference.run`) write
one record per finished input into the same output folder; each part's ``manifest.json``
is rewritten from all records present, so with parts running at once it holds whichever
part finished last. :func:`merge_parts` is the step after all parts: it checks that every
input has exactly one current record (made from its present content) and writes
``run_index.json``, the run's index, atomically.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sa2_pipeline.inference.run import collect_inputs, sha256_file
from sa2_pipeline.io_utils import atomic_write_text
from sa2_pipeline.user_errors import UserError

INDEX_FORMAT = "sa2-pipeline/inference-run-index/1"
INDEX_NAME = "run_index.json"


class IncompleteRunError(UserError, RuntimeError):
    """Some input has no record: a part has not finished (rerun the parts)."""


def _records(out_dir: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """Every readable record of ``out_dir`` by (input name, content SHA-256)."""
    found = {}
    for path in sorted((out_dir / "records").glob("*.json")):
        try:
            record = json.loads(path.read_text())
            found[(record["name"], record["sha256"])] = record
        except (OSError, ValueError, KeyError):
            continue
    return found


def merge_parts(input_dir: Path, out_dir: Path) -> dict[str, Any]:
    """Index every input of ``input_dir`` by its record in ``out_dir``.

    Returns the index's summary (``inputs``, ``indexed``, ``models``, ``index``).

    Raises:
        IncompleteRunError: An input has no record for its present content, or its
            outputs are missing; nothing is written then.
    """
    inputs = collect_inputs([input_dir], exclude=out_dir)
    records = _records(out_dir)
    index, missing = {}, []
    for entry in sorted(inputs, key=lambda e: e.name):
        record = records.get((entry.name, sha256_file(entry.path)))
        outputs = (record or {}).get("outputs", {})
        if record is None or not all((out_dir / o).is_file() for o in outputs.values()):
            missing.append(entry.name)
            continue
        index[entry.name] = {k: record.get(k) for k in ("sha256", "outputs", "model", "key")}
    if missing:
        raise IncompleteRunError(
            f"{out_dir}: {len(missing)} of {len(inputs)} input(s) have no finished outputs "
            f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}): rerun the "
            "parts (each skips the inputs it already finished)")
    models = sorted({json.dumps(r["model"], sort_keys=True) for r in index.values()})
    path = atomic_write_text(out_dir / INDEX_NAME, json.dumps(
        {"format": INDEX_FORMAT, "input_dir": str(input_dir), "inputs": index,
         "models": [json.loads(m) for m in models]}, indent=2, sort_keys=True))
    return {"inputs": len(inputs), "indexed": len(index), "models": len(models),
            "index": str(path)}
