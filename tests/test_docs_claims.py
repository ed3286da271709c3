"""Claims in the README, docs and metadata that drifted from the code stay true."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
_DOCS = [ROOT / "README.md", ROOT / "dvc.yaml", *sorted((ROOT / "docs").glob("*.md"))]


def test_no_doc_uses_the_deprecated_pipeline_flag():
    """Kedro 1.7 deprecates ``kedro run --pipeline`` in favour of ``--pipelines``."""
    stale = [f"{p.relative_to(ROOT)}:{n}" for p in _DOCS
             for n, line in enumerate(p.read_text().splitlines(), 1)
             if re.search(r"--pipeline(?!s)\b", line)]
    assert not stale, stale


def test_the_readme_names_the_model_input_files_the_catalog_writes():
    readme = (ROOT / "README.md").read_text()
    assert "train/val/test.npz" not in readme
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    outs = [next(iter(o)) if isinstance(o, dict) else o
            for o in dvc["stages"]["data_processing"]["do"]["outs"]]
    for name in ("trainval.npz", "test.npz"):
        assert any(str(o).endswith(name) for o in outs) and f"`{name}`" in readme


def test_every_requested_extra_exists():
    """pip silently ignores a missing extra (kedro-datasets 9.6.0 has no
    matplotlib-matplotlibwriter): every one asked for must be provided."""
    text = (ROOT / "pyproject.toml").read_text()
    for package, extras in re.findall(r'"([A-Za-z0-9_.-]+)\[([^\]]+)\]', text):
        provided = set(metadata.metadata(package).get_all("Provides-Extra") or [])
        missing = {e.strip() for e in extras.split(",")} - provided
        assert not missing, f"{package} has no extra(s) {sorted(missing)}"
