"""dvc.yaml's code deps, derived rather than repeated: the training stage depends on every
entry of the training fingerprint's list (``engine/fingerprint.py``, ``TRAINING_CODE``), and
every ``kedro run --pipelines <name>`` stage on every project module its pipeline package
imports, directly or not. Read from the AST (imports inside functions count; comments,
strings and ``if TYPE_CHECKING:`` imports do not); no DVC, Kedro or torch needed."""

from __future__ import annotations

import ast
import re
import sys
from functools import cache
from pathlib import Path

import pytest
import yaml

from sa2_pipeline.engine.fingerprint import TRAINING_CODE

REPO_ROOT = Path(__file__).resolve().parents[1]
SRC = REPO_ROOT / "src"
PACKAGE = "sa2_pipeline"
PACKAGE_DIR = SRC / PACKAGE
_KEDRO_RUN = re.compile(r"\bkedro\s+run\b.*?(?<![\w-])(?:--pipelines?|-p)(?:\s+|=)([\w,-]+)")
TRAINING_PIPELINE = "training"


# ------------------------------------------------------------------------------ dvc.yaml


@cache
def _stages() -> dict[str, dict]:
    """dvc.yaml's stages by name, each as its definition body (``do`` of a ``foreach``)."""
    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    return {name: stage.get("do", stage) for name, stage in stages.items()}


def _deps(stage: dict) -> list[str]:
    """A stage's deps as paths (an entry may be ``path`` or ``{path: options}``)."""
    out = []
    for dep in stage.get("deps") or []:
        out.extend([dep] if isinstance(dep, str) else list(dep))
    return [d.rstrip("/") for d in out]


def _covered(path: str, deps: list[str]) -> bool:
    """Whether a dep is ``path`` or a folder above it."""
    return any(path == d or path.startswith(d + "/") for d in deps)


def _pipelines(cmd: str) -> list[str]:
    """The Kedro pipelines a stage's command runs."""
    return [p for match in _KEDRO_RUN.findall(cmd or "") for p in match.split(",") if p]


def _kedro_stages() -> list[tuple[str, str]]:
    return [(stage, pipeline) for stage, body in _stages().items()
            for pipeline in _pipelines(body.get("cmd", ""))]


def _training_stages() -> list[str]:
    return [stage for stage, pipeline in _kedro_stages() if pipeline == TRAINING_PIPELINE]


def _src(path: Path) -> str:
    return path.relative_to(REPO_ROOT).as_posix()


# ------------------------------------------------------------------------ import graph


@cache
def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__.py``)."""
    modules = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


@cache
def _tree(module: str) -> ast.Module:
    path = _modules()[module]
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _is_type_checking(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _run_time_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement anywhere in the tree, except under ``if TYPE_CHECKING:``."""
    found, todo = [], [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        if _is_type_checking(node):
            todo.extend(node.orelse)  # the ``else`` branch does run
            continue
        todo.extend(ast.iter_child_nodes(node))
    return found


def _imported(module: str) -> list[str]:
    """The project modules ``module`` imports by name.

    ``import a.b`` and ``from a.b import c`` name ``a.b``; ``from a import b`` names
    ``a.b`` when that is a module, else ``a``. Relative imports are resolved.
    """
    modules = _modules()
    is_package = modules[module].name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    named: set[str] = set()
    for node in _run_time_imports(_tree(module)):
        if isinstance(node, ast.Import):
            bases = [alias.name for alias in node.names]
            members: list[tuple[str, str]] = []
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            bases = []
            members = [(base, alias.name) for alias in node.names]
        for base in bases:
            named.add(_longest_module(base))
        for base, name in members:
            named.add(f"{base}.{name}" if f"{base}.{name}" in modules else _longest_module(base))
    return sorted(m for m in named if m in modules and m != module)


def _longest_module(dotted: str) -> str:
    parts = dotted.split(".")
    while len(parts) > 1 and ".".join(parts) not in _modules():
        parts.pop()
    return ".".join(parts)


def _ancestors(module: str) -> list[str]:
    """The packages Python imports before ``module`` (their ``__init__.py`` runs)."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _inert(module: str) -> bool:
    """An ``__init__.py`` whose own statements compute nothing: only imports and constants.

    Imported only as the parent of another module, such a file cannot change a result
    (what it imports is followed on its own), so a stage need not depend on it.
    """
    body = _tree(module).body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    for statement in body:
        if isinstance(statement, ast.Import | ast.ImportFrom):
            continue
        targets = (statement.targets if isinstance(statement, ast.Assign)
                   else [statement.target] if isinstance(statement, ast.AnnAssign) else [])
        if (targets and all(isinstance(t, ast.Name) for t in targets)
                and statement.value is not None):
            try:
                ast.literal_eval(statement.value)
                continue
            except ValueError:
                return False
        return False
    return True


def _required_modules(folder: Path) -> dict[str, str]:
    """Every project module that runs when the modules of ``folder`` are imported.

    Returns module -> why it runs (for the error message). Packages imported only as a
    parent and whose ``__init__.py`` is inert are followed but not returned.
    """
    seeds = [m for m, p in _modules().items() if p.is_relative_to(folder)]
    required: dict[str, str] = dict.fromkeys(seeds, "the pipeline")
    seen: set[str] = set()
    todo = [(m, "the pipeline", True) for m in seeds]
    while todo:
        module, why, direct = todo.pop()
        if direct or not _inert(module):
            required.setdefault(module, why)
        if module in seen:
            continue
        seen.add(module)
        for parent in _ancestors(module):
            if parent in _modules():
                todo.append((parent, f"parent package of {module}", False))
        for target in _imported(module):
            todo.append((target, f"imported by {module}", True))
    return required


# ------------------------------------------------------------------------------- tests


def test_dvc_yaml_has_a_training_stage():
    assert _training_stages(), (
        f"no dvc.yaml stage runs `kedro run --pipelines {TRAINING_PIPELINE}`: "
        f"stages {sorted(_stages())}"
    )


@pytest.mark.parametrize("stage", _training_stages())
def test_the_training_stage_depends_on_the_fingerprinted_code(stage):
    deps = _deps(_stages()[stage])
    listed = [_src(PACKAGE_DIR / entry) for entry in TRAINING_CODE]
    missing = [path for path in listed if not _covered(path, deps)]
    assert not missing, (
        f"dvc.yaml stage {stage!r} does not depend on this code of the training fingerprint "
        f"(engine/fingerprint.py, TRAINING_CODE): {missing}"
    )
    absent = [path for path in listed if not (REPO_ROOT / path).exists()]
    assert not absent, f"TRAINING_CODE lists paths that do not exist: {absent}"


@pytest.mark.parametrize(("stage", "pipeline"), _kedro_stages())
def test_a_pipeline_stage_depends_on_the_code_it_imports(stage, pipeline):
    folder = PACKAGE_DIR / "pipelines" / pipeline
    assert folder.is_dir(), f"stage {stage!r} runs pipeline {pipeline!r}: no {_src(folder)}"
    deps = _deps(_stages()[stage])
    assert _src(folder) in deps, f"stage {stage!r} does not depend on {_src(folder)}"
    uncovered = sorted(
        f"{_src(_modules()[module])} ({why})"
        for module, why in _required_modules(folder).items()
        if not _covered(_src(_modules()[module]), deps)
    )
    assert not uncovered, (
        f"dvc.yaml stage {stage!r} runs code it does not depend on:\n  " + "\n  ".join(uncovered)
    )


@pytest.mark.parametrize("stage", sorted(_stages()))
def test_every_code_dep_exists(stage):
    missing = [d for d in _deps(_stages()[stage])
               if d.startswith("src/") and not (REPO_ROOT / d).exists()]
    assert not missing, f"dvc.yaml stage {stage!r} depends on code that does not exist: {missing}"


# ------------------------------------------------------------------- the walk itself


def test_the_import_walk_resolves_relative_function_level_and_from_imports():
    training = _required_modules(PACKAGE_DIR / "pipelines" / TRAINING_PIPELINE)
    # ``from .pipeline import create_pipeline`` in the pipeline's __init__ (relative).
    assert f"{PACKAGE}.pipelines.{TRAINING_PIPELINE}.pipeline" in training
    # Training imports the engine inside its node functions; the engine computes the
    # fingerprint inside a method (engine/spec.py).
    assert f"{PACKAGE}.engine.fingerprint" in training
    # Names, not modules, are never returned; nothing outside the package is.
    assert all(m in _modules() for m in training)


def test_inert_parent_packages_are_followed_but_not_required(tmp_path, monkeypatch):
    package = tmp_path / "src" / PACKAGE
    (package / "pipelines" / "demo").mkdir(parents=True)
    (package / "lib").mkdir()
    (package / "busy").mkdir()
    (package / "__init__.py").write_text('"""Root."""\n__version__ = "1"\n')
    (package / "pipelines" / "__init__.py").write_text("")
    (package / "pipelines" / "demo" / "__init__.py").write_text("from .nodes import run\n")
    (package / "pipelines" / "demo" / "nodes.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from sa2_pipeline.busy import typed\n"
        "def run():\n    from sa2_pipeline.lib import helper\n    from ...busy import b\n"
    )
    (package / "lib" / "__init__.py").write_text("from sa2_pipeline.lib.impl import x\n")
    (package / "lib" / "impl.py").write_text("x = 1\n")
    (package / "lib" / "helper.py").write_text("import numpy\n")
    (package / "busy" / "__init__.py").write_text("import os\nos.environ['X'] = '1'\n")
    (package / "busy" / "b.py").write_text("")
    (package / "busy" / "typed.py").write_text("")
    this = sys.modules[__name__]
    monkeypatch.setattr(this, "SRC", tmp_path / "src")
    monkeypatch.setattr(this, "PACKAGE_DIR", package)
    _modules.cache_clear()
    _tree.cache_clear()
    try:
        required = _required_modules(package / "pipelines" / "demo")
    finally:
        _modules.cache_clear()
        _tree.cache_clear()
    assert set(required) == {
        "sa2_pipeline.pipelines.demo", "sa2_pipeline.pipelines.demo.nodes",
        "sa2_pipeline.lib.helper",  # imported in a function
        "sa2_pipeline.lib.impl",  # imported by lib/__init__, which runs first
        "sa2_pipeline.busy",  # a parent that does something at import
        "sa2_pipeline.busy.b",  # a relative import
    }, required
