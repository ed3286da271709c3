"""Architecture rules of docs/architecture.md, checked on the source tree itself."""

from __future__ import annotations

import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

# Design documents that lived outside the repository: nothing in it may cite them (the
# facts they held are in docs/). Built from parts so this file does not cite them itself.
_EXTERNAL_DOCS = re.compile(
    r"\b(?:" + "|".join(("DESIGN", "SA2NET_SPEC", "REPRODUCTION", "ENVIRONMENT", "STYLE"))
    + r")\.md\b|\.\./" + "shared"
)


_SCANNED = ("src", "tests", "docs", "conf", "benchmarks", "notebooks", ".ci")
_TOP_LEVEL = ("README.md", "pyproject.toml", "dvc.yaml", "dvc_datasets.yaml", "Makefile")
_SKIPPED_PARTS = {"__pycache__", "local", ".ipynb_checkpoints"}  # conf/local is per machine


def _text_files() -> list[Path]:
    """Every source, config and documentation file of the project (not data/ or .venv)."""
    files = [REPO_ROOT / name for name in _TOP_LEVEL if (REPO_ROOT / name).is_file()]
    for folder in _SCANNED:
        for path in sorted((REPO_ROOT / folder).rglob("*")):
            if path.is_file() and not _SKIPPED_PARTS & set(path.relative_to(REPO_ROOT).parts):
                files.append(path)
    return files


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:  # binary test fixtures
        return []


def test_no_file_cites_documents_outside_the_repository():
    offenders = []
    for path in _text_files():
        for number, line in enumerate(_lines(path), start=1):
            if _EXTERNAL_DOCS.search(line):
                offenders.append(f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}")
    assert not offenders, "cite docs/... instead:\n" + "\n".join(offenders)


def test_docs_cited_from_code_exist():
    cited = re.compile(r"docs/([\w.-]+\.md)")
    missing = []
    for path in _text_files():
        for name in set(cited.findall("\n".join(_lines(path)))):
            if not (REPO_ROOT / "docs" / name).is_file():
                missing.append(f"{path.relative_to(REPO_ROOT)} cites docs/{name}")
    assert not missing, "\n".join(sorted(missing))
