"""Crash-safe file output: write to a temporary sibling, rename into place when complete.

A reader never sees a half-written file or folder: either the old state or the new one.
The temporary path is a sibling of the final one (same directory, hence same file
system), so the final ``os.replace``/``os.rename`` is atomic on POSIX and on Windows for
files.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = [
    "apply_umask",
    "atomic_directory",
    "atomic_write_bytes",
    "atomic_write_text",
    "process_alive",
    "remove_stale_temporaries",
]


def _fsync_directory(directory: Path) -> None:
    """Flush a directory entry to disk so a completed rename survives a power loss."""
    if os.name != "posix":  # Windows cannot open directories; the rename is enough there.
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_renamed(directory: Path) -> None:
    """Flush the directory after a rename: the new output is already complete and in place,
    so a failure here is reported (a power loss could still undo the rename), not raised."""
    try:
        _fsync_directory(directory)
    except OSError as exc:
        logger.warning("%s: could not flush the directory after a rename (%s)", directory, exc)


def current_umask() -> int:
    """The process umask, read without changing it where the system allows (Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere the only way to read it is to set it, then restore
    os.umask(mask)
    return mask


def apply_umask(path: str | os.PathLike[str], directory: bool = False) -> None:
    """Give ``path`` the mode an ordinary ``open``/``mkdir`` would (0666/0777 less the umask).

    ``mkstemp`` and ``mkdtemp`` create private files (0600) and folders (0700); the final
    outputs must be as readable as any other file the user creates, so a team sharing a
    project (group-readable umask) can read each other's models and figures.
    """
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


def named_os_error(exc: OSError, path: str | os.PathLike[str]) -> OSError:
    """The same error (same errno, hence same subclass) naming the final ``path``.

    A disk-full or read-only error raised while writing a temporary file names nothing
    (``write``) or only the temporary; the user needs the output it was writing.
    """
    if exc.filename == str(path):
        return exc
    reason = exc.strerror or str(exc) or type(exc).__name__
    return OSError(exc.errno, f"{reason} (while writing {path})", str(path))


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` so that the file is either absent/old or complete.

    The bytes go to a temporary file in the same directory, are flushed to disk, and the
    temporary file is renamed over ``path``. Parent directories are created.

    Args:
        path: Final file path. An existing file is replaced.
        data: Content to write.

    Returns:
        The final path.

    Raises:
        OSError: the write failed (disk full, read-only, permission); the error keeps its
            errno and names ``path``, and the previous file is left as it was.
    """
    final = Path(path)
    try:
        _write_then_rename(final, data)
    except OSError as exc:
        raise named_os_error(exc, final) from exc
    remove_stale_temporaries(final)
    return final


def _write_then_rename(final: Path, data: bytes) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    # The writer's process id is part of the temporary name, so a later write can tell the
    # leftovers of a killed writer (removed) from a live concurrent one (left alone).
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{final.name}.{os.getpid()}-", suffix=".tmp", dir=final.parent
    )
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_renamed(final.parent)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (POSIX; never call it on Windows)."""
    try:
        os.kill(pid, 0)  # signal 0: existence check only (POSIX)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(final: str | os.PathLike[str]) -> list[Path]:
    """Delete the ``.<name>.<pid>-*.tmp`` files that killed writers of ``final`` left.

    A process killed in the middle of :func:`atomic_write_bytes` (SIGKILL, power loss)
    cannot remove its temporary file. Every successful write of the same file calls this,
    so such leftovers live only until the next write. A temporary file is removed when
    the process that wrote it no longer exists on this machine; those of live processes
    (concurrent writers) and of this process are kept. POSIX only (elsewhere nothing is
    removed, as process liveness cannot be checked safely).

    Returns:
        The files removed.
    """
    if os.name != "posix":
        return []
    final = Path(final)
    prefix = f".{final.name}."
    removed = []
    for candidate in final.parent.glob(f"{glob.escape(prefix)}*.tmp"):
        if candidate.is_symlink() or not candidate.is_file():
            continue
        pid_text = candidate.name[len(prefix) :].split("-", 1)[0]
        if not pid_text.isdigit():
            continue  # not written by atomic_write_bytes
        pid = int(pid_text)
        if pid == os.getpid() or process_alive(pid):
            continue
        try:
            candidate.unlink()
        except FileNotFoundError:  # another writer cleaned it up first
            continue
        removed.append(candidate)
        logger.info("removed %s, left by a killed writer (process %d)", candidate, pid)
    return removed


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
        OSError: writing or renaming failed (disk full, read-only); the error keeps its
            errno and names ``final``, which is left as it was.
    """
    final = Path(final)
    if final.exists() and not overwrite and not _is_empty_dir(final):
        raise FileExistsError(f"{final}: already exists and is not empty; not overwriting")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
        apply_umask(tmp, directory=True)
    except OSError as exc:
        raise named_os_error(exc, final) from exc
    try:
        yield tmp
        _commit_directory(tmp, final, overwrite)
    except FileExistsError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise named_os_error(exc, final) from exc
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
        _fsync_renamed(final.parent)
        shutil.rmtree(trash, ignore_errors=True)
        return
    os.rename(tmp, final)
    _fsync_renamed(final.parent)


def redact_uri(uri: str) -> str:
    """``uri`` without a password written into it (``http://user:pw@host`` -> ``http://user:***@host``)."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(uri)
    except ValueError:
        return uri
    if parts.password is None:
        return uri
    netloc = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{netloc}"))
