"""Show a user's mistake as its message, not as a stack trace.

A bad parameter, a missing environment or a bad raw dataset is the user's to fix: the
message names the key or the file and what to do, and a 300-line traceback only hides it.
:func:`install_excepthook` makes an uncaught error of that kind print ``Error: <message>``
(the process still exits with status 1); every other error, or any error with
``SA2_VERBOSE=1`` (or ``sa2-pipeline --verbose``), keeps its full traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

__all__ = ["ConfigFileError", "OutputFolderError", "UserError", "check_output_folder",
           "config_file_error", "find_in_chain", "find_user_error", "install_excepthook",
           "verbose"]

VERBOSE_VARIABLE = "SA2_VERBOSE"


class UserError(Exception):
    """Base of errors whose message tells the user everything needed to fix them."""


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def find_user_error(exc: BaseException) -> BaseException | None:
    """The user error ``exc`` is or wraps (Kedro wraps dataset errors), else ``None``."""
    return next((e for e in _chain(exc) if isinstance(e, UserError)), None)


def find_in_chain(exc: BaseException,
                  predicate: Callable[[BaseException], bool]) -> BaseException | None:
    """The first error of ``exc``'s chain (causes and contexts) that ``predicate`` accepts."""
    return next((e for e in _chain(exc) if predicate(e)), None)


class OutputFolderError(UserError, ValueError):
    """An output folder that cannot be written (a file, a read-only folder...)."""


def check_output_folder(path: str | Path, what: str = "output folder") -> None:
    """Refuse, before any work, an output folder that cannot be created or written.

    ``path`` need not exist yet: its nearest existing ancestor must then be a writable
    folder. Raises :class:`OutputFolderError` naming the folder and the problem.
    """
    folder = Path(path)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "it" if existing == folder else str(existing)
        raise OutputFolderError(f"{what} {folder}: {where} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "it" if existing == folder else f"its parent {existing}"
        raise OutputFolderError(f"{what} {folder}: {where} is not writable "
                                "(permission denied)")


class ConfigFileError(UserError, ValueError):
    """A configuration file that is not valid YAML, or gives a key twice."""


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader that refuses a key given twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = lines.get(key)
            except TypeError:  # an unhashable key: yaml reports it below
                continue
            if first is not None:
                raise ConfigFileError(f"key {key!r} is given twice (lines {first} and "
                                      f"{line})")
            lines[key] = line
        return super().construct_mapping(node, deep=deep)


def yaml_file_problem(path: Path) -> str | None:
    """What is wrong with the YAML file ``path`` (file and line named), or ``None``."""
    try:
        yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)  # noqa: S506
    except ConfigFileError as err:
        return f"{path}: {err}"
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(p) for p in (err.context, err.problem) if p)
        return f"{path}:{where}: {problem or err}"
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        return f"{path}: {err}"
    return None


def config_file_error(conf_source: str | Path, envs: Iterable[str | None]
                      ) -> ConfigFileError | None:
    """The YAML files of ``conf_source``'s ``base`` and ``envs`` folders that do not
    load (syntax error, duplicate key), as one error naming each file and line; ``None``
    when every file loads (the caller's error then lies elsewhere)."""
    conf = Path(conf_source)
    problems: list[str] = []
    for env in dict.fromkeys(["base", *(e for e in envs if e)]):
        folder = conf / env
        if not folder.is_dir():
            continue
        for path in sorted(p for p in folder.rglob("*")
                           if p.suffix in (".yml", ".yaml") and p.is_file()):
            problem = yaml_file_problem(path)
            if problem:
                problems.append(problem)
    if not problems:
        return None
    return ConfigFileError("a configuration file does not load: " + "; ".join(problems))


def verbose() -> bool:
    """Whether full tracebacks were asked for (``SA2_VERBOSE=1``)."""
    return os.environ.get(VERBOSE_VARIABLE, "").strip().lower() in ("1", "true", "yes")


def install_excepthook() -> None:
    """Print uncaught user errors as one message; chain to the previous hook otherwise."""
    previous = sys.excepthook
    if getattr(previous, "_sa2_user_errors", False):
        return

    def hook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        user_error = None if verbose() else find_user_error(exc)
        if user_error is None:
            previous(kind, exc, tb)
            return
        print(f"Error: {user_error}\n(set {VERBOSE_VARIABLE}=1 for the full traceback)",
              file=sys.stderr)

    hook._sa2_user_errors = True  # type: ignore[attr-defined]
    sys.excepthook = hook
