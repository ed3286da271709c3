"""Architecture rules of docs/architecture.md, checked on the source tree itself."""

from __future__ import annotations

import ast
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


# --------------------------------------------------------------------------------------
# Imports and function sizes, read from the AST of every module under src/ (comments and
# strings never count).
# --------------------------------------------------------------------------------------
SRC = REPO_ROOT / "src"
PACKAGE = "sa2_pipeline"
MAX_FUNCTION_LINES = 60

# The only modules that may import MLflow: the tracking package and the Kedro edge.
_MLFLOW_ALLOWED_PACKAGES = (f"{PACKAGE}.tracking",)
_MLFLOW_ALLOWED_MODULES = (f"{PACKAGE}.hooks", f"{PACKAGE}.settings")


def _modules() -> dict[str, tuple[Path, ast.Module]]:
    """Every module of the package by dotted name, parsed."""
    modules = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = (path, ast.parse(path.read_text(), filename=str(path)))
    return modules


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _imported_names(module: str, path: Path, tree: ast.Module) -> list[tuple[str, int]]:
    """Every module named by an import statement anywhere in the file, with its line.

    ``from a.b import c`` yields ``a.b`` and ``a.b.c`` (``c`` may be a submodule);
    relative imports are resolved against ``module``.
    """
    names = []
    package = module if _is_package(path) else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names.append((base, node.lineno))
            names += [(f"{base}.{alias.name}", node.lineno) for alias in node.names]
    return names


def _mlflow_allowed(module: str) -> bool:
    return module in _MLFLOW_ALLOWED_MODULES or any(
        module == p or module.startswith(p + ".") for p in _MLFLOW_ALLOWED_PACKAGES
    )


def test_only_tracking_and_the_kedro_edge_import_mlflow():
    importers, offenders = [], []
    for module, (path, tree) in _modules().items():
        lines = sorted({line for name, line in _imported_names(module, path, tree)
                        if name == "mlflow" or name.startswith("mlflow.")})
        if not lines:
            continue
        importers.append(module)
        if not _mlflow_allowed(module):
            where = ", ".join(str(line) for line in lines)
            offenders.append(f"{path.relative_to(REPO_ROOT)}:{where}")
    assert not offenders, (
        "MLflow may be imported only in tracking/, hooks.py and settings.py "
        "(docs/architecture.md); also imported by:\n" + "\n".join(offenders)
    )
    assert importers, "no module imports MLflow: the walk found nothing to check"


def _import_graph() -> dict[str, dict[str, int]]:
    """module -> {imported project module: line}, module-level and function-level alike."""
    modules = _modules()
    graph: dict[str, dict[str, int]] = {}
    for module, (path, tree) in modules.items():
        edges = graph.setdefault(module, {})
        for name, line in _imported_names(module, path, tree):
            # ``from pkg import name``: an edge to pkg.name when that is a module, else pkg.
            target = name if name in modules else None
            if target is None and name.rpartition(".")[0] in modules:
                continue  # ``name`` is an attribute; its module was yielded on its own
            if target and target != module:
                edges.setdefault(target, line)
    return graph


def _cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle [m0, m1, ..., m0] per group of modules that import each other.

    The groups are the strongly connected components of the graph (Tarjan's algorithm,
    iterative); in each, a breadth-first search from its first module back to itself
    gives the shortest cycle to report.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        work.append((node, iter(sorted(graph.get(node, {})))))

    for root in sorted(graph):
        if root in index:
            continue
        work: list = []
        visit(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    visit(child)
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = [stack.pop()]
                while group[-1] != node:
                    group.append(stack.pop())
                on_stack.difference_update(group)
                if len(group) > 1:
                    groups.append(sorted(group))
    return [_shortest_cycle(graph, group) for group in sorted(groups)]


def _shortest_cycle(graph: dict[str, dict[str, int]], group: list[str]) -> list[str]:
    start, members = group[0], set(group)
    previous: dict[str, str] = {}
    queue = [start]
    for node in queue:
        for child in sorted(graph[node]):
            if child == start:
                path = [node]
                while path[-1] != start:
                    path.append(previous[path[-1]])
                return [*reversed(path), start]
            if child in members and child not in previous:
                previous[child] = node
                queue.append(child)
    raise AssertionError(f"no cycle through {start}")  # a component always has one


def test_no_import_cycle_between_project_modules():
    graph = _import_graph()
    assert sum(map(len, graph.values())), "no project imports found: nothing was checked"
    cycles = _cycles(graph)
    report = [
        "\n".join(f"  {a} imports {b} (line {graph[a][b]})"
                  for a, b in zip(cycle, cycle[1:], strict=False))
        for cycle in cycles
    ]
    assert not cycles, f"{len(cycles)} import cycle(s):\n" + "\n\n".join(report)


def test_cycle_search_finds_every_cycle_and_nothing_else():
    graph = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}, "d": {"a": 4, "e": 5},
             "e": {"d": 6}, "f": {"a": 7}}
    assert _cycles(graph) == [["a", "b", "c", "a"], ["d", "e", "d"]]
    assert _cycles({"a": {"b": 1}, "b": {}, "c": {"a": 2, "b": 3}}) == []
    # the shortest way round a larger group
    graph = {"a": {"b": 1, "c": 2}, "b": {"c": 3}, "c": {"a": 4}}
    assert _cycles(graph) == [["a", "c", "a"]]


def _function_lengths() -> list[tuple[int, str]]:
    """(length in lines, "file:line name") of every function and method under src/."""
    lengths = []
    for _, (path, tree) in _modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1  # def line to last line
                lengths.append((length, f"{path.relative_to(REPO_ROOT)}:{node.lineno} "
                                        f"{node.name}"))
    return sorted(lengths, reverse=True)


def test_no_function_is_longer_than_60_lines():
    lengths = _function_lengths()
    assert lengths, "no function found under src/"
    too_long = [f"{where}: {n} lines" for n, where in lengths if n > MAX_FUNCTION_LINES]
    assert not too_long, (
        f"functions over {MAX_FUNCTION_LINES} lines (docs/architecture.md):\n"
        + "\n".join(too_long)
    )


# --------------------------------------------------------------------------------------
# The stack (docs/architecture.md): the top-level parts of sa2_pipeline in layers, bottom
# to top. A part imports only parts of lower layers, counting every import of project code,
# at module level and inside functions; the parts of the Kedro/CLI edge may also import
# each other. A new part must be given a layer here (and in docs/architecture.md).
# --------------------------------------------------------------------------------------
LAYERS: tuple[tuple[str, frozenset[str]], ...] = (
    ("errors", frozenset({"user_errors"})),
    ("foundation", frozenset({PACKAGE, "config_files", "io_utils", "locks"})),
    ("runtime", frozenset({"runtime"})),
    ("models and raw data", frozenset({"models", "datasets"})),
    ("config", frozenset({"config"})),
    ("training inputs and losses", frozenset({"dataloading", "losses", "splits"})),
    ("metrics", frozenset({"metrics"})),
    ("inference", frozenset({"inference"})),
    ("engine", frozenset({"engine"})),
    ("reporting", frozenset({"reporting"})),
    ("tracking", frozenset({"tracking"})),
    ("retraining", frozenset({"retraining"})),
    ("edge", frozenset({"pipelines", "cli", "hooks", "settings", "kedro_io", "kedro_init",
                        "pipeline_registry", "kubeflow"})),
)
_EDGE = LAYERS[-1][0]


def _part(module: str) -> str:
    """``sa2_pipeline.engine.fit`` -> ``engine``; the package itself is ``sa2_pipeline``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else PACKAGE


def _part_edges() -> dict[tuple[str, str], list[str]]:
    """(importing part, imported part) -> the imports behind it, ``module:line -> module``."""
    edges: dict[tuple[str, str], list[str]] = {}
    for module, targets in _import_graph().items():
        for target, line in targets.items():
            a, b = _part(module), _part(target)
            if a != b:
                edges.setdefault((a, b), []).append(f"{module}:{line} -> {target}")
    return edges


def test_every_part_of_the_package_has_a_layer():
    layered = set().union(*(parts for _, parts in LAYERS))
    parts = {_part(module) for module in _modules()}
    assert parts - layered == set(), "give these parts a layer in LAYERS and in the docs"
    assert layered - parts == set(), "LAYERS names parts that no longer exist"


def test_each_part_imports_only_lower_layers():
    level = {part: i for i, (_, parts) in enumerate(LAYERS) for part in parts}
    edges = _part_edges()
    assert edges, "no import between parts found: nothing was checked"
    upward = []
    for (a, b), where in sorted(edges.items()):
        same_edge = LAYERS[level[a]][0] == _EDGE and level[a] == level[b]
        if level[b] >= level[a] and not same_edge:
            upward += [f"{a} ({LAYERS[level[a]][0]}) imports {b} ({LAYERS[level[b]][0]}): {w}"
                       for w in where]
    assert not upward, "imports that go up or sideways in the stack:\n" + "\n".join(upward)


def test_no_import_cycle_between_parts():
    graph: dict[str, dict[str, int]] = {}
    for a, b in _part_edges():
        graph.setdefault(a, {})[b] = 1
        graph.setdefault(b, {})
    cycles = _cycles(graph)
    assert not cycles, f"{len(cycles)} cycle(s) between parts: {cycles}"


#: File names that every Kedro pipeline folder has by convention (the Kedro starters').
_CONVENTIONAL_NAMES = {"__init__.py", "nodes.py", "pipeline.py"}


def test_no_two_modules_share_a_name():
    """A module's name says its job: two files of the same name in different packages
    (``run.py`` for an MLflow run and for a folder of slides) make a reader guess."""
    by_name: dict[str, list[str]] = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        if path.name not in _CONVENTIONAL_NAMES:
            by_name.setdefault(path.name, []).append(str(path.relative_to(SRC / PACKAGE)))
    shared = {name: paths for name, paths in by_name.items() if len(paths) > 1}
    assert not shared, f"modules that share a name: {shared}"


# Third-party libraries that cost a cheap command (``sa2-pipeline --help``, ``kedro
# registry list``) noticeable start-up time: a project module that loads one at import
# is "heavy", and only heavy modules may be imported inside functions.
_HEAVY_LIBRARIES = {
    "torch", "mlflow", "kedro", "kedro_datasets", "kedro_mlflow", "cv2", "skimage",
    "albumentations", "matplotlib", "sklearn", "scipy", "pandas", "tifffile", "tiffslide",
    "openslide", "imagecodecs", "nibabel", "dvc", "pyarrow", "filelock", "tqdm", "yaml",
}


def _module_level_imports(module: str, path: Path, tree: ast.Module) -> list[str]:
    """What ``module`` imports when it is imported (its body's import statements, outside
    functions and ``if TYPE_CHECKING:``), as dotted names."""
    names = []
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            single = ast.Module(body=[node], type_ignores=[])
            names += [name for name, _ in _imported_names(module, path, single)]
    return names


def _heavy_modules() -> set[str]:
    """Project modules whose import loads a heavy library, directly or through project
    modules they import at module level (parent packages included)."""
    modules = _modules()
    direct: dict[str, set[str]] = {}
    heavy = set()
    for module, (path, tree) in modules.items():
        names = _module_level_imports(module, path, tree)
        if {n.split(".")[0] for n in names} & _HEAVY_LIBRARIES:
            heavy.add(module)
        parents = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}
        direct[module] = ({n for n in names if n in modules} | parents) - {module}
    changed = True
    while changed:
        changed = False
        for module, deps in direct.items():
            if module not in heavy and deps & heavy:
                heavy.add(module)
                changed = True
    return heavy


def test_project_imports_inside_functions_are_only_of_heavy_modules():
    """A file's header says what it depends on: an import of the project's own code sits
    at the top of the file, unless the imported module loads a heavy library."""
    modules, heavy = _modules(), _heavy_modules()
    assert {"sa2_pipeline.engine.trainer", "sa2_pipeline.tracking.pyfunc"} <= heavy
    offenders = []
    for module, (path, tree) in modules.items():
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                if not isinstance(node, ast.Import | ast.ImportFrom):
                    continue
                single = ast.Module(body=[node], type_ignores=[])
                targets = {n for n, _ in _imported_names(module, path, single) if n in modules}
                if targets and not targets & heavy:
                    offenders.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno} "
                                     f"{ast.unparse(node)}")
    assert not offenders, ("move these imports of light project modules to the top of "
                           "their file:\n" + "\n".join(offenders))
