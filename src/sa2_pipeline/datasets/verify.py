"""The one verification workflow every adapter runs: collect every problem, then decide.

An adapter is a small converter: it knows its dataset's layout and how to turn one file
into a canonical image or mask. Everything else happens here, the same way for all of
them:

1. **List and pair the files** (:func:`list_files`, :func:`first_per_stem`,
   :func:`pair_by_id`, :func:`duplicate_ids`, :func:`warn_unread`): every image without
   annotation, annotation without image and colliding id is a problem.
2. **Read every pair** (:func:`read_all`, optionally in a pool of forked worker
   processes): a reader turns one :class:`~sa2_pipeline.datasets.schema.RawSample` into
   a :class:`PairRead` (image, mask and the problems found), raising nothing.
3. **Cross-check and record** (:meth:`Verification.accept`): the mask must match its
   image's size and no image may repeat an earlier one. A pair is kept (image, mask,
   manifest row) only while no problem has been found anywhere: verification goes on over
   every file, but nothing partial is kept.
4. **Raise everything or build** (:meth:`Verification.finish`): one
   :class:`~sa2_pipeline.datasets.schema.DatasetValidationError` listing every problem,
   or the :class:`~sa2_pipeline.datasets.schema.IngestedDataset`.

What a dataset needs beyond that is data on :class:`PairSpec` (a further per-pair check,
such as mask values against a number of classes, becomes one more field there and one
more check in :meth:`Verification.accept`).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import threading
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sa2_pipeline.datasets.raster import limit_side
from sa2_pipeline.datasets.schema import (
    KEY_SEPARATOR,
    DatasetValidationError,
    IngestedDataset,
    Problem,
    RawSample,
    build_manifest,
    manifest_row,
    sha256_array,
    sha256_file,
)

logger = logging.getLogger(__name__)

__all__ = [
    "DuplicateFinder",
    "PairRead",
    "PairReader",
    "PairSpec",
    "Verification",
    "default_workers",
    "duplicate_ids",
    "first_per_stem",
    "label_problems",
    "list_files",
    "pair_by_id",
    "read_all",
    "verify_pairs",
    "warn_unread",
]


# --------------------------------------------------------------------------- listing


def list_files(folder: Path, suffixes: Iterable[str]) -> dict[str, list[Path]]:
    """Files in ``folder`` with one of ``suffixes`` (case-insensitive), grouped by stem.

    Hidden files (``.*``, e.g. macOS ``._x.png`` resource forks) are skipped; a missing
    folder gives an empty dict. Stems are in sorted order, paths of one stem too.
    """
    wanted = {s.lower() for s in suffixes}
    found: dict[str, list[Path]] = defaultdict(list)
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in wanted:
                found[path.stem].append(path)
    return dict(found)


def first_per_stem(
    found: Mapping[str, Sequence[Path]], used: set[Path]
) -> tuple[dict[str, Path], list[Problem]]:
    """The first file of each key of ``found`` (from :func:`list_files`); every further
    file with the same key is a problem. All of them are added to ``used``."""
    chosen: dict[str, Path] = {}
    problems: list[Problem] = []
    for key, paths in found.items():
        used.update(paths)
        chosen[key] = paths[0]
        problems += [(str(p), f"same stem as {paths[0]}; ids must be unique") for p in paths[1:]]
    return chosen, problems


def pair_by_id(
    images: Mapping[str, Path],
    annotations: Mapping[str, Path],
    *,
    split: str | Mapping[str, str],
    expected: Callable[[str], Path],
    missing: Callable[[str, Path], str],
    orphan: Callable[[str], str],
) -> tuple[list[RawSample], list[Problem]]:
    """One sample per image, in ``images`` order, paired with the same-id annotation.

    Args:
        images / annotations: ``id -> file``.
        split: The split of every sample, or ``id -> split``.
        expected: The annotation path an image without one should have had.
        missing: The problem of an image without annotation (``id``, expected path).
        orphan: The problem of an annotation without image (``id``).

    Returns:
        ``(samples, problems)``: a sample for every image (its annotation path may not
        exist; that is then a problem), and the pairing problems, images first.
    """
    samples: list[RawSample] = []
    problems: list[Problem] = []
    for sample_id, image_path in images.items():
        annotation_path = annotations.get(sample_id)
        if annotation_path is None:
            annotation_path = expected(sample_id)
            problems.append((str(image_path), missing(sample_id, annotation_path)))
        hint = split if isinstance(split, str) else split[sample_id]
        samples.append(RawSample(sample_id, hint, image_path, annotation_path))
    problems += [(str(p), orphan(i)) for i, p in annotations.items() if i not in images]
    return samples, problems


def duplicate_ids(items: Iterable[tuple[str, Path]]) -> list[Problem]:
    """One problem per ``(id, image path)`` whose id an earlier item already has."""
    first: dict[str, Path] = {}
    problems: list[Problem] = []
    for item_id, path in items:
        if item_id in first:
            problems.append((str(path), f"duplicate id {item_id!r} (also {first[item_id]})"))
        else:
            first[item_id] = path
    return problems


def warn_unread(
    name: str,
    root: Path,
    folders: Iterable[Path],
    used: Collection[Path],
    skip: Callable[[Path], bool] = lambda path: False,
) -> None:
    """Log (warning) the files in the dataset's ``folders`` that the adapter does not read:
    not in ``used``, not hidden (``.DS_Store``...) and not ``skip``-ped (licence files)."""
    ignored = sorted(
        path
        for folder in set(folders)
        if folder.is_dir()
        for path in folder.iterdir()
        if path.is_file() and path not in used and not path.name.startswith(".")
        and not skip(path)
    )
    if ignored:
        logger.warning(
            "%s at %s: ignored %d file(s) that are not image/annotation files: %s",
            name,
            root,
            len(ignored),
            ", ".join(p.relative_to(root).as_posix() for p in ignored[:10])
            + (" ..." if len(ignored) > 10 else ""),
        )


# --------------------------------------------------------------------------- reading


@dataclass
class PairRead:
    """What reading one sample found; made by a reader, possibly in a worker process.

    Attributes:
        image: Canonical RGB uint8 image, or None when it could not be read.
        mask: Canonical mask, or None when it could not be read (or was not built).
        problems: ``(path, reason)`` of everything wrong with the sample's files.
        pixels_sha256: :func:`~sa2_pipeline.datasets.schema.sha256_array` of ``image``
            when the reader computed it (else the verifier does).
        image_sha256: SHA-256 of the raw image file, likewise.
        instances: Canonical instance map (:func:`~sa2_pipeline.datasets.raster.
            instance_labels`) when the format has instance labels, else None.
    """

    image: np.ndarray | None
    mask: np.ndarray | None
    problems: list[Problem] = field(default_factory=list)
    pixels_sha256: str | None = None
    image_sha256: str | None = None
    instances: np.ndarray | None = None


@dataclass(frozen=True)
class PairReader:
    """A reader from two converters: ``read_image(path)`` and ``read_mask(path)``.

    Each converter returns the canonical array or raises ``ValueError`` with the reason;
    a missing annotation file is not read (pairing has reported it). Picklable when both
    converters are module-level functions, so it can run in :func:`read_all`'s pool.
    """

    read_image: Callable[[Path], np.ndarray]
    read_mask: Callable[[Path], np.ndarray]
    #: For formats whose annotation is an instance label map (GlaS): the canonical
    #: instance map of the same file (:func:`~sa2_pipeline.datasets.raster.instance_labels`).
    read_instances: Callable[[Path], np.ndarray] | None = None

    def __call__(self, sample: RawSample) -> PairRead:
        found = PairRead(None, None)
        try:
            found.image = self.read_image(sample.image_path)
        except ValueError as err:
            found.problems.append((str(sample.image_path), str(err)))
        if sample.annotation_path.is_file():
            try:
                found.mask = self.read_mask(sample.annotation_path)
                if self.read_instances is not None:
                    found.instances = self.read_instances(sample.annotation_path)
            except ValueError as err:
                found.problems.append((str(sample.annotation_path), str(err)))
        return found


def default_workers() -> int:
    """``min(4, usable CPU cores)``: the default size of :func:`read_all`'s pool."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


def _fork_context() -> multiprocessing.context.BaseContext | None:
    """The "fork" start method where forking is safe: Linux, no other Python thread.

    Forked workers start in milliseconds and import nothing; "spawn" and "forkserver"
    would re-import the caller's ``__main__`` in every worker (impossible for stdin,
    slow for the Kedro CLI). A process running other threads (a notebook kernel, a
    threaded runner) could deadlock a forked child, so it reads in-process instead.
    """
    if not sys.platform.startswith("linux") or threading.active_count() > 1:
        return None
    return multiprocessing.get_context("fork")


def read_all(
    samples: Sequence[RawSample],
    read_one: Callable[[RawSample], PairRead],
    workers: int = 1,
    min_pool_bytes: int = 0,
) -> Iterator[PairRead]:
    """``read_one`` of every sample, in order; in ``workers`` forked processes if it pays.

    The pool is used only with ``workers > 1``, several samples, at least
    ``min_pool_bytes`` of raw files (starting workers costs more than reading a small
    dataset) and a process where forking is safe (:func:`_fork_context`). The results,
    and so every problem and its order, do not depend on it.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    context = _fork_context() if workers > 1 and len(samples) > 1 else None
    if context is not None:
        size = sum(
            path.stat().st_size
            for sample in samples
            for path in (sample.image_path, sample.annotation_path)
            if path.is_file()
        )
        if size >= min_pool_bytes:
            with ProcessPoolExecutor(min(workers, len(samples)), mp_context=context) as pool:
                yield from pool.map(read_one, samples)
            return
    for sample in samples:
        yield read_one(sample)


# --------------------------------------------------------------------------- verifying


class DuplicateFinder:
    """Remembers content hashes and says which earlier file had the same content."""

    def __init__(self) -> None:
        self._first: dict[str, Path] = {}

    def check(self, digest: str, path: Path, noun: str = "pixels") -> str | None:
        """Record ``path`` under ``digest``; the reason it is a duplicate, or None."""
        if digest in self._first:
            return f"duplicate image: identical {noun} to {self._first[digest]}"
        self._first[digest] = path
        return None


@dataclass(frozen=True)
class PairSpec:
    """What the verifier needs to know about one dataset.

    Attributes:
        root: Raw dataset root; manifest paths are relative to it.
        dataset_name: Value of the manifest's ``dataset`` column.
        label: The dataset's name in log lines (``"GlaS"``).
        mask_word: How messages name the mask (``"annotation"`` for GlaS).
        max_side: Keep each pair downscaled so that its longer side is at most this
            (:func:`~sa2_pipeline.datasets.raster.limit_side`), after the checks on the
            full-size files; None keeps native resolution.
        report_root: The folder named in the error and the log line (default ``root``).
    """

    root: Path
    dataset_name: str
    label: str
    mask_word: str = "mask"
    max_side: int | None = None
    report_root: Path | None = None


class Verification:
    """Collects every problem of one dataset and the pairs kept while there is none."""

    def __init__(self, spec: PairSpec, problems: Iterable[Problem] = ()) -> None:
        self.spec = spec
        self.problems: list[Problem] = list(problems)
        self.images: dict[str, np.ndarray] = {}
        self.masks: dict[str, np.ndarray] = {}
        self.instances: dict[str, np.ndarray] = {}
        self.rows: list[dict[str, object]] = []
        self._duplicates = DuplicateFinder()

    def report(self, path: Path | str, reason: str) -> None:
        """Add one problem."""
        self.problems.append((str(path), reason))

    def is_duplicate(self, digest: str, path: Path, noun: str = "pixels") -> bool:
        """Whether content with ``digest`` was seen before (then it is a problem)."""
        duplicate = self._duplicates.check(digest, path, noun)
        if duplicate:
            self.report(path, duplicate)
        return duplicate is not None

    def accept(self, sample: RawSample, found: PairRead) -> None:
        """The checks every adapter makes once a sample was read; keep it if all is well."""
        self.problems += found.problems
        image, mask = found.image, found.mask
        if image is not None and mask is not None and mask.shape != image.shape[:2]:
            self.report(
                sample.annotation_path,
                f"{self.spec.mask_word} is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image "
                f"{sample.image_path.name} is {image.shape[1]}x{image.shape[0]}",
            )
            mask = None
        if image is not None:
            digest = found.pixels_sha256 or sha256_array(image)
            if self.is_duplicate(digest, sample.image_path):
                return
        if image is None or mask is None or self.problems:
            return
        instances = found.instances
        if self.spec.max_side is not None:
            if instances is not None:
                instances = limit_side(image, instances, self.spec.max_side)[1]
            image, mask = limit_side(image, mask, self.spec.max_side)
        self.keep(sample.id, sample, image, mask, image_sha256=found.image_sha256,
                  instances=instances)

    def keep(
        self,
        sample_id: str,
        sample: RawSample,
        image: np.ndarray,
        mask: np.ndarray,
        *,
        annotation_paths: Sequence[Path] | None = None,
        image_sha256: str | None = None,
        group: str = "",
        instances: np.ndarray | None = None,
    ) -> None:
        """Record a verified image, its mask (and instance map) and its manifest row.

        Args:
            sample_id: The row's id (several rows may come from one sample: ACDC slices).
            sample: Where the pair came from (split, files).
            annotation_paths: The annotation files, when there are several (SegPC);
                default ``[sample.annotation_path]``.
            image_sha256: SHA-256 of the raw image file, if already known.
            group: Group that splits must keep together (``""``: none).
            instances: The image's instance map, for formats with instance labels.
        """
        if KEY_SEPARATOR in sample_id:
            self.report(sample.image_path,
                        f"id {sample_id!r} contains {KEY_SEPARATOR!r}, which separates keys in "
                        "the cached model inputs; rename the file")
            return
        self.images[sample_id], self.masks[sample_id] = image, mask
        if instances is not None:
            self.instances[sample_id] = instances
        self.rows.append(
            manifest_row(
                sample_id=sample_id,
                dataset=self.spec.dataset_name,
                split=sample.split,
                root=self.spec.root,
                image_path=sample.image_path,
                annotation_paths=annotation_paths or [sample.annotation_path],
                image=image,
                mask=mask,
                image_sha256=image_sha256 or sha256_file(sample.image_path),
                group=group,
                instances=instances,
            )
        )

    def raise_problems(self) -> None:
        """Raise every problem found so far at once, if there is any."""
        if self.problems:
            raise DatasetValidationError(self.problems, self.spec.report_root or self.spec.root)

    def finish(self, detail: str = "") -> IngestedDataset:
        """Raise every problem at once, or build and log the dataset.

        Args:
            detail: Extra facts for the log line (``"412 cells"``).
        """
        self.raise_problems()
        manifest = build_manifest(self.rows)
        splits = ", ".join(
            f"{k}={v}" for k, v in sorted(manifest["split"].value_counts().items())
        )
        logger.info(
            "Loaded %s from %s: %d images (%s)%s, mean foreground fraction %.3f",
            self.spec.label, self.spec.report_root or self.spec.root, len(manifest), splits,
            f", {detail}" if detail else "", manifest["foreground_fraction"].mean(),
        )
        return IngestedDataset(manifest=manifest, images=self.images, masks=self.masks,
                               instances=self.instances)


def label_problems(dataset: IngestedDataset, root: Path | str,
                   num_classes: int) -> list[Problem]:
    """Masks holding labels the model cannot learn, named by their annotation file.

    ``num_classes`` is ``model.num_classes``: 1 (binary, sigmoid) allows the labels 0 and
    1; C >= 2 (softmax) allows 0 .. C-1.
    """
    allowed = max(int(num_classes), 2)
    rows = dataset.manifest.set_index("id")["annotation_path"]
    problems = []
    for sample_id, mask in dataset.masks.items():
        if mask.size == 0 or int(mask.max()) < allowed:
            continue
        bad = [int(v) for v in np.unique(mask) if v >= allowed]
        shown = f"{bad[:10]}{' ...' if len(bad) > 10 else ''}"
        where = Path(root) / str(rows.get(sample_id, sample_id)).split(";")[0]
        problems.append((str(where), (
            f"mask holds label(s) {shown}, but model.num_classes = {num_classes} allows only "
            f"0..{allowed - 1}; fix the mask or set model.num_classes")))
    return problems


def verify_pairs(
    samples: Sequence[RawSample],
    read_one: Callable[[RawSample], PairRead],
    verification: Verification,
    workers: int = 1,
    min_pool_bytes: int = 0,
) -> Verification:
    """Read every sample (:func:`read_all`) and :meth:`~Verification.accept` it.

    With ``max_side``, each pair is downscaled as soon as it is verified, so memory holds
    one full-size pair at a time in-process (ISIC 2018's 2594 JPEGs decode to tens of GB).
    """
    for sample, found in zip(
        samples, read_all(samples, read_one, workers, min_pool_bytes), strict=True
    ):
        verification.accept(sample, found)
    if verification.spec.max_side is not None:
        logger.info("images and masks kept with their longer side at most %d px",
                    verification.spec.max_side)
    return verification
