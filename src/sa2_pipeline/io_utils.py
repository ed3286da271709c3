"""Crash-safe file output: write to a temporary sibling, rename into place when complete.

A reader never sees a half-written file or folder: either the old state or the new one.
The temporary path is a sibling of the final one (same directory, hence same file
system), so the final ``os.replace``/``os.rename`` is atomic on POSIX and on Windows for
files.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = ["atomic_directory", "atomic_write_bytes", "atomic_write_text"]


def _fsync_directory(directory: Path) -> None:
    """Flush a directory entry to disk so a completed rename survives a power loss."""
    if os.name != "posix":  # Windows cannot open directories; the rename is enough there.
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` so that the file is either absent/old or complete.

    The bytes go to a temporary file in the same directory, are flushed to disk, and the
    temporary file is renamed over ``path``. Parent directories are created.

    Args:
        path: Final file path. An existing file is replaced.
        data: Content to write.

    Returns:
        The final path.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_directory(final.parent)
    return final


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write_bytes`).

    Args:
        path: Final file path. An existing file is replaced.
        text: Content to write.
        encoding: Text encoding.

    Returns:
        The final path.
    """
    return atomic_write_bytes(path, text.encode(encoding))


def _fsync_tree(root: Path) -> None:
    """Flush every file under ``root`` so the renamed directory is complete on disk."""
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            file_path = Path(dirpath, name)
            if file_path.is_symlink():
                continue
            fd = os.open(file_path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_directory(Path(dirpath))


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())


@contextlib.contextmanager
def atomic_directory(final: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Build a directory under a temporary sibling name and rename it into place.

    Usage::

        with atomic_directory(Path("data/01_raw/monuseg")) as tmp:
            (tmp / "a.tif").write_bytes(...)
        # here data/01_raw/monuseg exists with all its content, or not at all

    On success the temporary directory is renamed to ``final``. If the block raises, the
    temporary directory is removed and ``final`` is left exactly as it was.

    Args:
        final: Directory to create. Its parent is created if missing.
        overwrite: If ``final`` already exists and is not empty, replace it (the old one
            is moved aside first and deleted only after the new one is in place). If
            False, a non-empty ``final`` raises :class:`FileExistsError` (before the
            block runs, and again at commit time if it appeared meanwhile). An existing
            *empty* directory is always replaced.

    Yields:
        The temporary directory to fill.

    Raises:
        FileExistsError: ``final`` exists, is not an empty directory, and ``overwrite``
            is False.
    """
    final = Path(final)
    if final.exists() and not overwrite and not _is_empty_dir(final):
        raise FileExistsError(f"{final}: already exists and is not empty; not overwriting")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        _commit_directory(tmp, final, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _commit_directory(tmp: Path, final: Path, overwrite: bool) -> None:
    """Rename ``tmp`` to ``final``, handling an existing ``final`` per ``overwrite``."""
    _fsync_tree(tmp)
    if final.is_symlink() or final.is_file():
        if not overwrite:
            raise FileExistsError(f"{final}: already exists and is not a directory")
        final.unlink()
    elif _is_empty_dir(final):
        final.rmdir()
    elif final.exists():
        if not overwrite:
            raise FileExistsError(f"{final}: appeared while it was being written; not overwriting")
        trash = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=final.parent))
        trash.rmdir()
        os.rename(final, trash)
        try:
            os.rename(tmp, final)
        except BaseException:
            os.rename(trash, final)  # put the old content back
            raise
        _fsync_directory(final.parent)
        shutil.rmtree(trash, ignore_errors=True)
        return
    os.rename(tmp, final)
    _fsync_directory(final.parent)
