"""Find new or changed annotated slides in a raw folder, by content hash.

The authority is the ingestion manifest: every row carries the SHA-256 of its raw image
file and of its canonical mask. :func:`compare_manifests` diffs the manifest the dataset's
own adapter builds from the raw folder now against the current one, by image id.

Running the adapter reads and verifies every file, which takes a while on a large dataset,
so :func:`detect_changes` first compares a cheap inventory (path -> SHA-256 of every raw
file) with the one saved when the current manifest was made: identical inventories mean
nothing can have changed and the adapter is not run (the fast no-op).

The frozen test set does not depend on the manifest alone: ``dvc repro`` deletes a stage's
outputs (``manifest.csv`` among them) before it runs, so a retrain killed in its DVC step
leaves no manifest behind. The ids and content hashes of the test split are therefore also
kept in a reference file of the retraining state (:func:`write_test_reference`), which
stands in for the missing manifest; with neither, the change is not cleared.

A new or changed training image that is a near-duplicate of a test image (the same slide
re-encoded, shifted by a grey level...) would leak the test set into training; exact
hashes miss it, so :func:`find_test_near_duplicates` compares 32x32 grey thumbnails.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sa2_pipeline.datasets.raster import read_raster
from sa2_pipeline.datasets.schema import DatasetValidationError

__all__ = [
    "NEAR_DUPLICATE_CORRELATION",
    "Detection",
    "SlideChanges",
    "compare_manifests",
    "detect_changes",
    "file_sha256",
    "scan_raw_folder",
    "find_test_near_duplicates",
    "write_inventory",
    "write_test_reference",
]

#: Pearson correlation of two images' 32x32 grey thumbnails at or above which a training
#: image counts as a copy of a test image. Measured on the synthetic tiles (40 tiles of
#: 256 px, docs/retraining.md): at most 0.23 between two different tiles, 0.99999 for a
#: test tile with every pixel XOR 1.
NEAR_DUPLICATE_CORRELATION = 0.98
#: Side of the grey thumbnails that :func:`find_test_near_duplicates` compares.
THUMBNAIL_SIDE = 32


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
    #: True when the data had been ingested (an inventory exists) but neither the
    #: manifest nor the frozen test set's reference is there: the test split is unknown.
    test_reference_missing: bool = False


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


def write_test_reference(path: str | os.PathLike[str],
                         manifest: pd.DataFrame | str | os.PathLike[str]) -> None:
    """Save the frozen test set (id -> image and mask SHA-256 of every test row), atomically.

    ``manifest`` is an ingestion manifest or its file. Kept outside the DVC stage's
    outputs, so a ``dvc repro`` that deletes the manifest and is killed cannot take the
    test set's identity with it.
    """
    if not isinstance(manifest, pd.DataFrame):
        manifest = _read_manifest(Path(manifest))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    test = manifest[manifest["split"].astype(str) == "test"]
    record = {"test": {str(r.id): [str(r.image_sha256), str(r.mask_sha256)]
                       for r in test.itertuples(index=False)}}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _load_test_reference(path: Path | None) -> pd.DataFrame | None:
    """The saved frozen test set as manifest rows (``split`` test), or None."""
    if path is None:
        return None
    try:
        data = json.loads(path.read_text())["test"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(data, dict):
        return None
    return pd.DataFrame([(i, "test", h[0], h[1]) for i, h in data.items()],
                        columns=["id", "split", "image_sha256", "mask_sha256"])


def _thumbnail(image: np.ndarray, side: int = THUMBNAIL_SIDE) -> np.ndarray | None:
    """Zero-mean, unit-norm ``side`` x ``side`` grey block means of ``image`` (None: flat)."""
    grey = image.astype(np.float64)
    if grey.ndim == 3:
        grey = grey[..., :3].mean(axis=-1)
    for axis in (0, 1):  # nearest-neighbour up to ``side`` first, so no block is empty
        n = grey.shape[axis]
        if n < side:
            grey = np.take(grey, np.arange(side) * n // side, axis=axis)
    edges = [np.linspace(0, n, side + 1).astype(int) for n in grey.shape[:2]]
    sums = np.add.reduceat(np.add.reduceat(grey, edges[0][:-1], axis=0),
                           edges[1][:-1], axis=1)
    thumb = sums / np.outer(np.diff(edges[0]), np.diff(edges[1]))
    thumb -= thumb.mean()
    norm = float(np.linalg.norm(thumb))
    return thumb / norm if norm > 1e-9 else None


def find_test_near_duplicates(raw_dir: str | os.PathLike[str], manifest: pd.DataFrame,
                         ids: tuple[str, ...] | list[str],
                         threshold: float = NEAR_DUPLICATE_CORRELATION
                         ) -> list[tuple[str, str]]:
    """Problems for the images ``ids`` (not of the test split) that copy a test image.

    Each image and each test image of ``manifest`` is reduced to a 32x32 grey thumbnail
    (block means, so any size compares with any); a Pearson correlation of two
    thumbnails at or above ``threshold`` makes the pair near-duplicates.

    Returns:
        ``(image path, reason naming the test image and the correlation)`` pairs, as
        :class:`DatasetValidationError` takes them; empty when none.
    """
    if "image_path" not in manifest.columns:
        return []
    root = Path(raw_dir)
    rows = {str(r.id): r for r in manifest.itertuples(index=False)}
    test = [r for r in rows.values() if str(r.split) == "test"]
    candidates = [rows[i] for i in ids if i in rows and str(rows[i].split) != "test"]
    if not test or not candidates:
        return []
    cache: dict[str, np.ndarray | None] = {}

    def thumb(rel: str) -> np.ndarray | None:
        if rel not in cache:
            try:
                cache[rel] = _thumbnail(read_raster(root / rel))
            except (OSError, ValueError):  # not a 2D raster (a volume...): not compared
                cache[rel] = None
        return cache[rel]

    problems = []
    for row in candidates:
        mine = thumb(str(row.image_path))
        if mine is None:
            continue
        for other in test:
            theirs = thumb(str(other.image_path))
            if theirs is None or other.image_path == row.image_path:
                continue
            r = float(np.sum(mine * theirs))
            if r >= threshold:
                problems.append((str(row.image_path), (
                    f"near-duplicate of the test image {other.image_path} (32x32 grey "
                    f"correlation {r:.5f} >= {threshold}): a copy of a test slide may not "
                    "join training; remove it, or move it to the test folder with "
                    "--change-test-set")))
                break
    return problems


def detect_changes(
    raw_dir: str | os.PathLike[str],
    manifest_path: str | os.PathLike[str],
    inventory_path: str | os.PathLike[str],
    build_manifest: Callable[[], pd.DataFrame],
    test_reference_path: str | os.PathLike[str] | None = None,
) -> Detection:
    """Compare the raw folder with the current manifest.

    Args:
        raw_dir: The dataset's raw folder.
        manifest_path: The current ingestion manifest (may not exist yet).
        inventory_path: Where the inventory of the current manifest's raw files is kept.
        build_manifest: Runs the dataset's adapter over ``raw_dir`` (reads and verifies
            every file) and returns its manifest; called only when the inventory differs.
        test_reference_path: The frozen test set's reference (:func:`write_test_reference`).
            Written from the current manifest when it is not there yet; read in place of
            a missing manifest (a ``dvc repro`` killed after deleting it), so test images
            are still compared.

    Raises:
        Whatever ``build_manifest`` raises for bad files (``DatasetValidationError``,
        naming every file and its problem); nothing is written then. The same error for
        a new or changed training image that is a near-duplicate of a test image
        (:func:`find_test_near_duplicates`).
    """
    manifest_path = Path(manifest_path)
    reference_path = None if test_reference_path is None else Path(test_reference_path)
    files = scan_raw_folder(raw_dir)
    digest = inventory_digest(files)
    saved = _load_inventory(Path(inventory_path))
    current = _read_manifest(manifest_path)
    reference = _load_test_reference(reference_path)
    if reference is None and current is not None and reference_path is not None:
        write_test_reference(reference_path, current)  # first seen
    if (saved is not None and current is not None and saved["files"] == files
            and saved.get("manifest_sha256") == file_sha256(manifest_path)):
        return Detection(SlideChanges(), files, digest, fast_path=True)
    missing = False
    if current is None and reference is not None:
        current = reference  # only the test rows: every other image counts as new
    elif current is None and saved is not None and reference_path is not None:
        missing = True  # ingested before, yet nothing says which images are the test set
    fresh = build_manifest()
    changes = compare_manifests(current, fresh)
    problems = find_test_near_duplicates(raw_dir, fresh, (*changes.new, *changes.changed))
    if problems:
        raise DatasetValidationError(problems, raw_dir)
    if changes.nothing_new and manifest_path.is_file():
        write_inventory(inventory_path, files, manifest_path)
    return Detection(changes, files, digest, fast_path=False, fresh_manifest=fresh,
                     test_reference_missing=missing)


def _read_manifest(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    return pd.read_csv(path, dtype={"id": str, "group": str}, keep_default_na=False)
