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
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType

__all__ = ["OutputFolderError", "UserError", "check_output_folder", "find_in_chain",
           "find_user_error", "install_excepthook", "verbose"]

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
