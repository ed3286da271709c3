"""ACDC (Automated Cardiac Diagnosis Challenge) adapter: NIfTI cine-MRI frames -> 2D slices.

Layout, as the archive unpacks (``root`` may also be the ``database/`` folder's parent)::

    <root>/training/patient001/Info.cfg
    <root>/training/patient001/patient001_frame01.nii.gz      end-diastole volume
    <root>/training/patient001/patient001_frame01_gt.nii.gz   its labels
    <root>/training/patient001/patient001_frame12.nii.gz      end-systole volume (+ _gt)
    <root>/training/patient001/patient001_4d.nii.gz           full cine (ignored)
    ...
    <root>/testing/patient101/...                             same per-patient layout

or every ``patientNNN/`` folder directly in ``root``. ``.nii`` works as well as ``.nii.gz``.

Labels: 0 background, 1 right ventricle (RV), 2 myocardium, 3 left ventricle (LV); any
other (or non-integer) value is an error.

One sample per 2D slice: id ``patientNNN_frameMM_sliceKK`` (``KK`` = 0-based index along
the volume's third voxel axis). The slice array is ``volume[:, :, k].T``: rows follow the
second voxel axis and columns the first, the order SimpleITK gives (as in the TransUNet /
CASCADE preprocessing); no reorientation to a world frame is applied. Image and label
slices get the same transform, so they always align. The manifest's ``group`` column is
the patient id: all slices of a patient stay in one split.

Intensity scaling (MRI has no fixed range): per volume (one frame), values are clipped to
the volume's 0.5th..99.5th percentiles and mapped linearly onto 0..255 (uint8), then the
grey slice is replicated into 3 identical RGB channels. A constant volume becomes 0.

Split, by patient and sorted patient number (none is published for the 2D protocol):

- with a ``testing/`` folder: its patients are ``"test"``; the ``training/`` patients
  are split 70 % ``"train"`` / 30 % ``"val"`` (100 patients: 70 / 30);
- otherwise all patients are split 70 % / 10 % / 20 % into train / val / test (100
  patients: 70 / 10 / 20, the TransUNet / CASCADE protocol's proportions).

Rounding: every part but train gets ``round(n * fraction)`` patients, at least one.
Duplicates are checked per volume (identical voxels), not per slice, since empty apical
slices of different patients may legitimately be identical after scaling.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from sa2_pipeline.datasets.schema import (
    DatasetValidationError,
    IngestedDataset,
    Problem,
    RawSample,
    proportional_counts,
    sha256_array,
    sha256_file,
)
from sa2_pipeline.datasets.verify import PairSpec, Verification

logger = logging.getLogger(__name__)

__all__ = [
    "CLASS_NAMES",
    "INFO_FILE",
    "PERCENTILES",
    "acdc_patient_splits",
    "load_acdc",
    "scale_to_uint8",
]

#: Canonical class index -> name.
CLASS_NAMES = {0: "background", 1: "RV", 2: "myocardium", 3: "LV"}
#: Per-patient metadata file (ED/ES frame numbers, pathology group, height, weight).
INFO_FILE = "Info.cfg"
#: Lower and upper intensity percentiles mapped to 0 and 255, per volume.
PERCENTILES = (0.5, 99.5)
_PATIENT = re.compile(r"^patient(?P<number>\d+)$")
_FRAME = re.compile(r"^(?P<patient>patient\d+)_(?P<frame>frame\d+)(?P<gt>_gt)?\.nii(?:\.gz)?$")
_CINE = re.compile(r"^patient\d+_4d\.nii(?:\.gz)?$")
_TRAIN_VAL = (0.7, 0.3)
_TRAIN_VAL_TEST = (0.7, 0.1, 0.2)


@dataclass(frozen=True)
class _Frame:
    patient: str
    frame: str  # "frame01"
    split: str
    image_path: Path
    label_path: Path


def _patient_number(folder: Path) -> int:
    match = _PATIENT.match(folder.name)
    return int(match["number"]) if match else -1


def _patient_dirs(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    dirs = [p for p in folder.iterdir() if p.is_dir() and _PATIENT.match(p.name)]
    return sorted(dirs, key=lambda p: (_patient_number(p), p.name))


def acdc_patient_splits(training: list[str], testing: list[str] | None) -> dict[str, str]:
    """Split hint of every patient (see the module docstring for the rule).

    Args:
        training: Patient ids of the ``training/`` folder (or of a flat layout), sorted.
        testing: Patient ids of the ``testing/`` folder, or None when there is none.

    Returns:
        ``patient id -> "train" | "val" | "test"``.
    """
    if testing is not None:
        n_train, _ = proportional_counts(len(training), _TRAIN_VAL)
        splits = {p: ("train" if i < n_train else "val") for i, p in enumerate(training)}
        splits.update({p: "test" for p in testing})
        return splits
    n_train, n_val, _ = proportional_counts(len(training), _TRAIN_VAL_TEST)
    return {
        p: "train" if i < n_train else "val" if i < n_train + n_val else "test"
        for i, p in enumerate(training)
    }


def _find_base(root: Path) -> Path:
    """``root``, or ``root/database`` when the archive's top folder was kept."""
    database = root / "database"
    if not _patient_dirs(root) and not (root / "training").is_dir() and database.is_dir():
        return database
    return root


def _read_info(patient_dir: Path, frames: set[str]) -> None:
    """Warn when ``Info.cfg`` is missing or its ED/ES frames are not the frames found."""
    info_path = patient_dir / INFO_FILE
    if not info_path.is_file():
        logger.warning("ACDC: %s has no %s", patient_dir, INFO_FILE)
        return
    try:
        text = info_path.read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        logger.warning("ACDC: cannot read %s: %s", info_path, err)
        return
    info = {
        key.strip(): value.strip()
        for key, sep, value in (line.partition(":") for line in text.splitlines())
        if sep
    }
    listed = set()
    for key in ("ED", "ES"):
        if info.get(key, "").isdigit():
            listed.add(f"frame{int(info[key]):02d}")
    if listed and listed != frames:
        logger.warning(
            "ACDC: %s lists ED/ES frames %s but the folder has %s",
            info_path,
            sorted(listed),
            sorted(frames),
        )


def _patient_folders(root: Path) -> tuple[list[Path], dict[str, str], list[Problem]]:
    """The patient folders of the layout found and each patient's split, or why none."""
    base = _find_base(root)
    expected = (
        f"looked for 'patientNNN/' folders holding 'patientNNN_frameMM.nii.gz' + "
        f"'patientNNN_frameMM_gt.nii.gz' in '{base / 'training'}' and '{base / 'testing'}', "
        f"or directly in '{base}'"
    )
    if not root.is_dir():
        return [], {}, [(str(root), f"raw dataset folder does not exist; {expected}")]
    flat = _patient_dirs(base)
    training, testing = _patient_dirs(base / "training"), _patient_dirs(base / "testing")
    if flat and (training or testing):
        return [], {}, [
            (
                str(base),
                "patient folders both directly in the root and in training/ or testing/; "
                "keep one layout",
            )
        ]
    if not flat and not training and not testing:
        return [], {}, [(str(base), f"no ACDC patient folders found; {expected}")]
    if testing and not training:
        logger.warning("ACDC at %s: no training/ patients; test split only", base)
    splits = acdc_patient_splits(
        [p.name for p in (flat or training)], [p.name for p in testing] if testing else None
    )
    return (flat or training) + testing, splits, []


def _frame_files(
    patient_dir: Path,
) -> tuple[dict[str, Path], dict[str, Path], list[Problem]]:
    """``frame -> image``, ``frame -> ground truth`` of one patient folder, and problems."""
    patient = patient_dir.name
    images: dict[str, Path] = {}
    labels: dict[str, Path] = {}
    problems: list[Problem] = []
    ignored: list[Path] = []
    for path in sorted(patient_dir.iterdir()):
        if not path.is_file() or path.name.startswith(".") or path.name == INFO_FILE:
            continue
        match = _FRAME.match(path.name)
        if match is None:
            if not _CINE.match(path.name):
                ignored.append(path)
            continue
        if match["patient"] != patient:
            problems.append(
                (str(path), f"file of {match['patient']} inside the folder of {patient}")
            )
            continue
        chosen = labels if match["gt"] else images
        if match["frame"] in chosen:
            problems.append((str(path), f"same frame as {chosen[match['frame']]}; keep one file"))
            continue
        chosen[match["frame"]] = path
    if ignored:
        logger.warning(
            "ACDC: ignored %d file(s) in %s: %s",
            len(ignored),
            patient_dir,
            ", ".join(p.name for p in ignored[:10]),
        )
    return images, labels, problems


def _patient_frames(patient_dir: Path, split: str) -> tuple[list[_Frame], list[Problem]]:
    """The labelled frames of one patient folder and its problems."""
    patient = patient_dir.name
    images, labels, problems = _frame_files(patient_dir)
    if not images and not labels:
        problems.append(
            (
                str(patient_dir),
                f"no frames found: expected '{patient}_frameMM.nii.gz' with "
                f"'{patient}_frameMM_gt.nii.gz'",
            )
        )
        return [], problems
    frames: list[_Frame] = []
    for frame, image_path in images.items():
        if frame not in labels:
            expected_gt = patient_dir / f"{patient}_{frame}_gt.nii.gz"
            problems.append((str(image_path), f"missing ground truth {expected_gt}"))
            continue
        frames.append(_Frame(patient, frame, split, image_path, labels[frame]))
    for frame, label_path in labels.items():
        if frame not in images:
            problems.append(
                (
                    str(label_path),
                    f"ground truth without image (expected "
                    f"{patient_dir / f'{patient}_{frame}.nii.gz'})",
                )
            )
    _read_info(patient_dir, set(images))
    return frames, problems


def _scan_layout(root: Path) -> tuple[list[_Frame], list[Problem]]:
    patient_dirs, splits, problems = _patient_folders(root)
    frames: list[_Frame] = []
    seen: dict[str, Path] = {}
    for patient_dir in patient_dirs:
        patient = patient_dir.name
        if patient in seen:
            problems.append((str(patient_dir), f"duplicate patient id (also {seen[patient]})"))
            continue
        seen[patient] = patient_dir
        found, more = _patient_frames(patient_dir, splits[patient])
        frames += found
        problems += more
    return frames, problems


def _read_volume(path: Path) -> np.ndarray:
    """Voxel array ``(X, Y, Z)`` of a NIfTI file; raises ValueError with the reason."""
    try:
        volume = np.asanyarray(nib.load(path).dataobj)
    except Exception as err:  # nibabel/gzip/zlib raise many types for bad files
        raise ValueError(f"unreadable NIfTI: {type(err).__name__}: {err}") from err
    while volume.ndim > 3 and volume.shape[-1] == 1:
        volume = volume[..., 0]
    if volume.ndim == 2:
        volume = volume[..., np.newaxis]
    if volume.ndim != 3 or min(volume.shape) < 1:
        raise ValueError(f"expected a 3D volume (X, Y, Z), got shape {volume.shape}")
    return volume


def scale_to_uint8(
    volume: np.ndarray, percentiles: tuple[float, float] = PERCENTILES
) -> np.ndarray:
    """Per-volume percentile min-max scaling to uint8 (see the module docstring).

    Args:
        volume: Intensity volume of any numeric dtype.
        percentiles: Lower and upper percentiles mapped to 0 and 255.

    Returns:
        uint8 array of the same shape.
    """
    values = volume.astype(np.float32)
    lo, hi = np.percentile(values, percentiles)
    if hi <= lo:
        return np.zeros(volume.shape, dtype=np.uint8)
    scaled = (np.clip(values, lo, hi) - lo) * np.float32(255.0 / (hi - lo))
    return np.rint(scaled).astype(np.uint8)


def _check_labels(labels: np.ndarray) -> np.ndarray:
    """Labels as uint8 in 0..3; raises ValueError naming the bad values."""
    if not np.issubdtype(labels.dtype, np.number):
        raise ValueError(f"expected numeric labels, got {labels.dtype}")
    values = np.unique(labels)
    if not np.issubdtype(values.dtype, np.integer):
        non_integer = values[np.mod(values, 1) != 0]
        if non_integer.size or not np.isfinite(values).all():
            shown = ", ".join(f"{v:g}" for v in values[:10])
            raise ValueError(f"non-integer label values ({shown}); expected 0, 1, 2, 3")
    bad = values[(values < 0) | (values > 3)]
    if bad.size:
        shown = ", ".join(f"{v:g}" for v in bad[:10]) + (" ..." if bad.size > 10 else "")
        allowed = ", ".join(f"{k} ({name})" for k, name in CLASS_NAMES.items())
        raise ValueError(f"unexpected label values {shown}; expected {allowed}")
    return labels.astype(np.uint8)


def load_acdc(root: Path, dataset_name: str = "acdc") -> IngestedDataset:
    """Read and verify an ACDC download and cut every labelled frame into 2D slices.

    Checks, all before returning: layout, every frame volume with its ``_gt`` volume and
    the reverse, every file readable as a 3D volume, labels integers in 0..3 and of the
    image's shape, no two volumes with identical voxels. All problems are raised
    together.

    Args:
        root: Folder holding ``training/`` (and ``testing/``), the patient folders, or
            ``database/``.
        dataset_name: Value of the manifest's ``dataset`` column.

    Returns:
        Manifest (one row per slice, sorted by patient, frame, slice; ``group`` = patient
        id), RGB uint8 slices (grey replicated) and uint8 label slices keyed by id.

    Raises:
        DatasetValidationError: Listing every bad file and the reason.
    """
    root = Path(root)
    frames, problems = _scan_layout(root)
    if not frames:
        raise DatasetValidationError(problems, root)
    verification = Verification(PairSpec(root, dataset_name, "ACDC"), problems)
    for frame in frames:
        volume, labels = _read_frame(frame, verification)
        if volume is None or labels is None or verification.problems:
            continue  # keep verifying; nothing is returned once a problem exists
        _keep_slices(frame, volume, labels, verification)
    return verification.finish(detail=f"slices of {len(frames)} volumes")


def _read_frame(
    frame: _Frame, verification: Verification
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """A frame's volume and labels (None where unreadable, mismatched or duplicated); every
    problem goes to ``verification``."""
    volume: np.ndarray | None = None
    labels: np.ndarray | None = None
    try:
        volume = _read_volume(frame.image_path)
    except ValueError as err:
        verification.report(frame.image_path, str(err))
    try:
        labels = _check_labels(_read_volume(frame.label_path))
    except ValueError as err:
        verification.report(frame.label_path, str(err))
    if volume is not None and labels is not None and labels.shape != volume.shape:
        verification.report(
            frame.label_path,
            f"ground truth shape {labels.shape} differs from its image's "
            f"{volume.shape} ({frame.image_path.name})",
        )
        labels = None
    if volume is not None and verification.is_duplicate(
        sha256_array(volume), frame.image_path, noun="voxels"
    ):
        return None, None
    return volume, labels


def _keep_slices(
    frame: _Frame, volume: np.ndarray, labels: np.ndarray, verification: Verification
) -> None:
    """Record every slice of a verified frame (image scaled per volume, grey -> RGB)."""
    scaled = scale_to_uint8(volume)
    image_sha256 = sha256_file(frame.image_path)
    sample = RawSample(frame.patient, frame.split, frame.image_path, frame.label_path)
    for k in range(volume.shape[2]):
        grey = scaled[:, :, k].T
        image = np.ascontiguousarray(np.repeat(grey[:, :, np.newaxis], 3, axis=2))
        mask = np.ascontiguousarray(labels[:, :, k].T)
        verification.keep(f"{frame.patient}_{frame.frame}_slice{k:02d}", sample, image, mask,
                          image_sha256=image_sha256, group=frame.patient)
