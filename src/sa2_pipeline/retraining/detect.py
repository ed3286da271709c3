"""Find new or changed annotated slides in a raw folder, by content hash.

The authority is the ingestion manifest: every row carries the SHA-256 of its raw image
file and of its canonical mask. :func:`compare_manifests` diffs the manifest the dataset's
own adapter builds from the raw folder now against the current one, by image id.

Running the adapter reads and verifies every file, which takes a while on a large dataset,
so :func:`detect_changes` first compares a cheap inventory (path -> SHA-256 of every raw
file) with the one saved when the current manifest was made: identical inventories mean
nothing can have changed and the adapter is not run (the fast no-op).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

__all__ = [
    "Detection",
    "SlideChanges",
    "compare_manifests",
    "detect_changes",
    "file_sha256",
    "scan_raw_folder",
    "write_inventory",
]


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes (what ``sha256sum`` prints)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def scan_raw_folder(root: str | os.PathLike[str]) -> dict[str, str]:
    """``{posix path relative to root: sha256}`` of every file under ``root``.

    Hidden files and folders (``.gitkeep``, ``.DS_Store``, ``.dvc``...) are not data and
    are skipped. A missing folder is an empty inventory.
    """
    root = Path(root)
    files: dict[str, str] = {}
    if not root.is_dir():
        return files
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            files[path.relative_to(root).as_posix()] = file_sha256(path)
    return files


def inventory_digest(files: dict[str, str]) -> str:
    """One hash of a whole inventory (paths and contents): the raw data's content id."""
    digest = hashlib.sha256()
    for rel in sorted(files):
        digest.update(f"{rel}\0{files[rel]}\n".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class SlideChanges:
    """What differs between the current manifest and the raw folder, by image id."""

    new: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    #: Ids among the above whose split is ``test`` in either manifest.
    test_affected: tuple[str, ...] = ()

    @property
    def n_new_images(self) -> int:
        """New plus changed images: what ``retraining.min_new_images`` counts."""
        return len(self.new) + len(self.changed)

    @property
    def nothing_new(self) -> bool:
        return not (self.new or self.changed or self.removed)

    def as_dict(self) -> dict[str, list[str] | int]:
        return {"new": list(self.new), "changed": list(self.changed),
                "removed": list(self.removed), "test_affected": list(self.test_affected),
                "n_new_images": self.n_new_images}


def compare_manifests(current: pd.DataFrame | None, fresh: pd.DataFrame) -> SlideChanges:
    """Diff two ingestion manifests by ``id`` (image and mask SHA-256, split).

    ``current`` None (never ingested) makes every image new, and none "test-affected".
    """
    def keyed(frame: pd.DataFrame) -> dict[str, tuple[str, str, str]]:
        return {str(r.id): (str(r.image_sha256), str(r.mask_sha256), str(r.split))
                for r in frame.itertuples(index=False)}

    old = keyed(current) if current is not None else {}
    new = keyed(fresh)
    added = sorted(set(new) - set(old))
    removed = sorted(set(old) - set(new))
    changed = sorted(i for i in set(new) & set(old) if new[i] != old[i])
    # Never ingested: there is no frozen test set yet to protect.
    test = [] if current is None else sorted(
        i for i in (*added, *removed, *changed)
        if "test" in (old.get(i, ("", "", ""))[2], new.get(i, ("", "", ""))[2]))
    return SlideChanges(tuple(added), tuple(changed), tuple(removed), tuple(test))


@dataclass(frozen=True)
class Detection:
    """Result of :func:`detect_changes`."""

    changes: SlideChanges
    #: The raw folder's inventory (path -> SHA-256) and its digest: the data version.
    inventory: dict[str, str] = field(repr=False)
    raw_digest: str
    #: True when the saved inventory matched and the adapter was not run.
    fast_path: bool
    #: The manifest the adapter built from the raw folder (None on the fast path).
    fresh_manifest: pd.DataFrame | None = field(default=None, repr=False)


def _load_inventory(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("files"), dict) else None


def write_inventory(path: str | os.PathLike[str], files: dict[str, str],
                    manifest_path: str | os.PathLike[str]) -> None:
    """Save the inventory the manifest at ``manifest_path`` was built from (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"manifest_sha256": file_sha256(manifest_path), "raw_digest":
              inventory_digest(files), "files": files}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
    os.replace(tmp, path)


def detect_changes(
    raw_dir: str | os.PathLike[str],
    manifest_path: str | os.PathLike[str],
    inventory_path: str | os.PathLike[str],
    build_manifest: Callable[[], pd.DataFrame],
) -> Detection:
    """Compare the raw folder with the current manifest.

    Args:
        raw_dir: The dataset's raw folder.
        manifest_path: The current ingestion manifest (may not exist yet).
        inventory_path: Where the inventory of the current manifest's raw files is kept.
        build_manifest: Runs the dataset's adapter over ``raw_dir`` (reads and verifies
            every file) and returns its manifest; called only when the inventory differs.

    Raises:
        Whatever ``build_manifest`` raises for bad files (``DatasetValidationError``,
        naming every file and its problem); nothing is written then.
    """
    manifest_path = Path(manifest_path)
    files = scan_raw_folder(raw_dir)
    digest = inventory_digest(files)
    saved = _load_inventory(Path(inventory_path))
    if (saved is not None and manifest_path.is_file() and saved["files"] == files
            and saved.get("manifest_sha256") == file_sha256(manifest_path)):
        return Detection(SlideChanges(), files, digest, fast_path=True)
    current = _read_manifest(manifest_path)
    fresh = build_manifest()
    changes = compare_manifests(current, fresh)
    if changes.nothing_new and manifest_path.is_file():
        write_inventory(inventory_path, files, manifest_path)
    return Detection(changes, files, digest, fast_path=False, fresh_manifest=fresh)


def _read_manifest(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    return pd.read_csv(path, dtype={"id": str, "group": str}, keep_default_na=False)
