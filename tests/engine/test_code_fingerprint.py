"""The training fingerprint covers what the code that computes a result computes, and only
that: comment, docstring and layout edits resume a run, behaviour edits start it over."""

import ast
import io
import shutil
import tokenize
from pathlib import Path

import pytest

from sa2_pipeline.engine import fingerprint
from sa2_pipeline.engine.fingerprint import TRAINING_CODE, canonical_source, code_fingerprint

PACKAGE = Path(fingerprint.__file__).resolve().parents[1]


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "sa2_pipeline"
    shutil.copytree(PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def _listed(root: Path, path: Path) -> bool:
    rel = path.relative_to(root).as_posix()
    return any(rel == entry or rel.startswith(entry + "/") for entry in TRAINING_CODE)


def test_the_default_root_is_this_package_and_the_location_does_not_count(tmp_path):
    root = _copy(tmp_path)
    assert code_fingerprint() == code_fingerprint(PACKAGE) == code_fingerprint(root)


def test_registry_and_tracking_edits_keep_the_fingerprint(tmp_path):
    root = _copy(tmp_path)
    before = code_fingerprint(root)
    # Every MLflow tag, key and name that tracking/ spells ("sa2.*"), renamed.
    renamed = 0
    for file in sorted((root / "tracking").rglob("*.py")):
        text = file.read_text()
        tags = [n for n in _strings(text) if n.value.startswith("sa2.")]
        renamed += len(tags)
        file.write_text(_replace_segments(text, [(n, repr("sa3." + n.value[4:])) for n in tags])
                        + "\nEDITED = 1\n")
    assert renamed, "no sa2.* string in tracking/ to rename"
    assert code_fingerprint(root) == before
    # Whole-slide and folder inference serve models; they do not train them.
    serving = [f for f in (root / "inference").glob("*.py") if not _listed(root, f)]
    assert serving, "no serving module found to edit"
    for file in serving:
        file.write_text(file.read_text() + "\nEDITED = 1\n")
    assert code_fingerprint(root) == before


def test_edits_outside_the_listed_code_keep_the_fingerprint(tmp_path):
    root = _copy(tmp_path)
    before = code_fingerprint(root)
    outside = [f for f in root.rglob("*.py") if not _listed(root, f)]
    for top in ("tracking", "pipelines", "config.py"):
        assert any(f.relative_to(root).parts[0] == top for f in outside), top
    for file in outside:
        file.write_text(file.read_text() + "\nEDITED = 1\n")
    assert code_fingerprint(root) == before


def test_the_validation_prediction_path_is_in_the_fingerprint(tmp_path):
    root = _copy(tmp_path)
    before = code_fingerprint(root)
    _edit(root / "inference" / "sliding_window.py", "sigma_scale: float = 1.0 / 8.0",
          "sigma_scale: float = 1.0 / 4.0")
    assert code_fingerprint(root) != before


def test_engine_and_model_edits_change_the_fingerprint(tmp_path):
    root = _copy(tmp_path)
    before = code_fingerprint(root)
    _edit(root / "engine" / "trainer.py", "CHECKPOINT_FORMAT = 1", "CHECKPOINT_FORMAT = 2")
    after_engine = code_fingerprint(root)
    assert after_engine != before
    (root / "models" / "unet.py").write_text(
        (root / "models" / "unet.py").read_text() + "\nEDITED = 1\n"
    )
    assert code_fingerprint(root) != after_engine


@pytest.mark.parametrize("entry", TRAINING_CODE)
def test_every_listed_entry_is_in_the_fingerprint(tmp_path, entry):
    root = _copy(tmp_path)
    before = code_fingerprint(root)
    target = root / entry
    file = target / "__init__.py" if target.is_dir() else target
    file.write_text(file.read_text() + "\nEDITED = 1\n")
    assert code_fingerprint(root) != before


def _offset(lines: list[str], line: int, col: int) -> int:
    """Character offset of (1-based line, 0-based UTF-8 column) in the joined lines."""
    return sum(len(x) for x in lines[: line - 1]) + len(
        lines[line - 1].encode()[:col].decode())


def _replace_segments(text: str, segments: list[tuple[ast.AST, str]]) -> str:
    """``text`` with each node's source segment replaced, last first."""
    lines = text.splitlines(keepends=True)
    spans = sorted(
        ((_offset(lines, n.lineno, n.col_offset), _offset(lines, n.end_lineno, n.end_col_offset),
          new) for n, new in segments),
        reverse=True,
    )
    for start, end, new in spans:
        text = text[:start] + new + text[end:]
    return text


def _with_comments(text: str) -> str:
    """A comment at the top, on every logical line's end, and blank lines between."""
    tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    ends = [t.start for t in tokens if t.type == tokenize.NEWLINE and t.string]
    lines = text.splitlines(keepends=True)
    for line, col in reversed(ends):
        lines[line - 1] = lines[line - 1][:col] + "  # a comment\n\n" + lines[line - 1][col:]
    return "# a new first line\n" + "".join(lines)


def _with_other_docstrings(text: str) -> str:
    """Every docstring rewritten, and one added to the first def that has none."""
    tree = ast.parse(text)
    documented = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    segments, undocumented = [], []
    for node in ast.walk(tree):
        if not isinstance(node, documented) or not node.body:
            continue
        first = node.body[0]
        if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)):
            segments.append((first, '"""Rewritten.\n\nOver two paragraphs."""'))
        elif isinstance(node, ast.FunctionDef) and first.lineno > node.lineno:
            undocumented.append(first)
    assert segments and undocumented
    text = _replace_segments(text, segments)
    tree = ast.parse(text)  # lines moved: find the def again
    first = next(
        n.body[0] for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)
        and n.body[0].lineno > n.lineno and not (
            isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant))
    )
    lines = text.splitlines(keepends=True)
    lines.insert(first.lineno - 1, " " * first.col_offset + '"""Added."""\n')
    return "".join(lines)


def test_a_comment_only_edit_in_the_trainer_keeps_the_fingerprint(tmp_path):
    root = _copy(tmp_path)
    before = code_fingerprint(root)
    trainer = root / "engine" / "trainer.py"
    text = trainer.read_text()
    edited = _with_comments(text)
    assert edited.count("# a comment") > 50
    trainer.write_text(edited)
    assert code_fingerprint(root) == before


def test_a_docstring_only_edit_in_the_trainer_keeps_the_fingerprint(tmp_path):
    root = _copy(tmp_path)
    before = code_fingerprint(root)
    trainer = root / "engine" / "trainer.py"
    edited = _with_other_docstrings(trainer.read_text())
    assert "Rewritten." in edited and "Added." in edited
    trainer.write_text(edited)
    assert code_fingerprint(root) == before


def test_a_docstring_that_is_the_only_statement_can_go():
    with_doc = canonical_source('"""Module."""\ndef f():\n    """Only a docstring."""\n')
    assert with_doc == canonical_source("def f():\n    pass\n")
    assert canonical_source('"""Only a docstring."""\n') == canonical_source("")
    assert canonical_source("def f():\n    pass\n") != canonical_source("def f():\n    ...\n")


def _strings(text: str) -> list[ast.Constant]:
    """Every string literal that is not a docstring."""
    tree = ast.parse(text)
    documented = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    docstrings = {
        id(n.body[0].value) for n in ast.walk(tree) if isinstance(n, documented) and n.body
        and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)
    }
    # Before Python 3.12 the parts of an f-string carry the whole f-string's position.
    in_fstrings = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr)
                   for v in n.values}
    return [n for n in ast.walk(tree) if isinstance(n, ast.Constant)
            and isinstance(n.value, str) and id(n) not in docstrings | in_fstrings]


def _first_number(text: str) -> ast.Constant:
    """The first integer or float literal in a function body."""
    return next(
        n for f in ast.walk(ast.parse(text)) if isinstance(f, ast.FunctionDef)
        for n in ast.walk(f) if isinstance(n, ast.Constant)
        and type(n.value) in (int, float)
    )


def _first_comparison(text: str) -> ast.Compare:
    """The first ``a == b`` in the code (not in a docstring or comment)."""
    return next(n for n in ast.walk(ast.parse(text)) if isinstance(n, ast.Compare)
                and [type(op) for op in n.ops] == [ast.Eq])


def test_a_behaviour_edit_in_the_trainer_changes_the_fingerprint(tmp_path):
    root = _copy(tmp_path)
    before = code_fingerprint(root)
    trainer = root / "engine" / "trainer.py"
    original = trainer.read_text()
    # A constant.
    number = _first_number(original)
    trainer.write_text(_replace_segments(original, [(number, repr(number.value + 1))]))
    assert code_fingerprint(root) != before
    trainer.write_text(original)
    assert code_fingerprint(root) == before
    # An operator: the first ``a == b``, made ``a != b``.
    compare = _first_comparison(original)
    flipped = ast.unparse(ast.Compare(compare.left, [ast.NotEq()], compare.comparators))
    trainer.write_text(_replace_segments(original, [(compare, f"({flipped})")]))
    assert code_fingerprint(root) != before
    # And one more comment on top of a behaviour edit still changes it.
    trainer.write_text(_with_comments(trainer.read_text()))
    assert code_fingerprint(root) != before


def test_a_string_that_is_not_a_docstring_is_code(tmp_path):
    root = _copy(tmp_path)
    before = code_fingerprint(root)
    trainer = root / "engine" / "trainer.py"
    trainer.write_text(trainer.read_text() + '\nEXTRA = "a value, not a docstring"\n')
    assert code_fingerprint(root) != before


def test_a_listed_path_that_is_missing_raises(tmp_path):
    root = _copy(tmp_path)
    for entry in TRAINING_CODE:
        gone = root / entry
        moved = tmp_path / "moved" / entry
        moved.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(gone, moved)
        with pytest.raises(FileNotFoundError, match=entry):
            code_fingerprint(root)
        shutil.move(moved, gone)
    code_fingerprint(root)  # all back: no error
