"""Writers of tiny datasets in each adapter's exact raw (as-downloaded) format.

Each writer returns what the adapter should produce, so tests can compare values, not
only shapes. Images are small (about 24x20) and distinct (random pixels), so the
duplicate checks stay quiet unless a test makes a copy on purpose.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np

H, W = 20, 24  # default slice / image size (rows, columns)


@dataclass
class Expected:
    """What an adapter should return for a written dataset."""

    splits: dict[str, str] = field(default_factory=dict)  # id -> split
    masks: dict[str, np.ndarray] = field(default_factory=dict)  # id -> canonical mask
    images: dict[str, np.ndarray] = field(default_factory=dict)  # id -> RGB (lossless only)
    groups: dict[str, str] = field(default_factory=dict)  # id -> group (ACDC)


def write_rgb(path: Path, rgb: np.ndarray) -> None:
    """Write an RGB uint8 image with OpenCV (which expects BGR)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"cv2 could not write {path}")


def write_grey(path: Path, grey: np.ndarray) -> None:
    """Write a single-channel image (8- or 16-bit) with OpenCV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), grey):
        raise OSError(f"cv2 could not write {path}")


def random_rgb(rng: np.random.Generator, height: int = H, width: int = W) -> np.ndarray:
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def blob_labels(
    rng: np.random.Generator, height: int = H, width: int = W, n: int = 2
) -> np.ndarray:
    """Instance label image: ``n`` random rectangles labelled 1..n on background 0."""
    labels = np.zeros((height, width), np.uint8)
    for k in range(1, n + 1):
        r, c = int(rng.integers(0, height - 6)), int(rng.integers(0, width - 6))
        labels[r : r + 5, c : c + 6] = k
    return labels


# --------------------------------------------------------------------------- GlaS


def write_glas(root: Path, counts: dict[str, int] | None = None, seed: int = 0) -> Expected:
    """``train_N``, ``testA_N``, ``testB_N`` BMP pairs + ``Grade.csv``; sizes vary."""
    counts = counts or {"train": 3, "testA": 2, "testB": 1}
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    expected = Expected()
    names = []
    for part, n in counts.items():
        for i in range(1, n + 1):
            height, width = H + i, W + 2 * i  # sizes vary, like the real tiles
            name = f"{part}_{i}"
            image, labels = random_rgb(rng, height, width), blob_labels(rng, height, width, 3)
            write_rgb(root / f"{name}.bmp", image)
            write_grey(root / f"{name}_anno.bmp", labels)
            expected.splits[name] = "train" if part == "train" else "test"
            expected.masks[name] = (labels > 0).astype(np.uint8)
            expected.images[name] = image
            names.append(name)
    grades = ["name, patient ID, grade (GlaS), grade (Sirinukunwattana et al. 2015)"]
    grades += [f"{name},1,benign,adenomatous" for name in names]
    (root / "Grade.csv").write_text("\n".join(grades) + "\n")
    return expected


# --------------------------------------------------------------------------- ISIC 2018

ISIC_IMAGES = "ISIC2018_Task1-2_Training_Input"
ISIC_MASKS = "ISIC2018_Task1_Training_GroundTruth"


def write_isic2018(root: Path, n: int = 10, seed: int = 0) -> Expected:
    """``ISIC_<id>.jpg`` + ``ISIC_<id>_segmentation.png`` (0/255), ids not contiguous."""
    rng = np.random.default_rng(seed)
    expected = Expected()
    ids = [f"ISIC_{int(k):07d}" for k in sorted(rng.choice(100000, n, replace=False))]
    for index, sample_id in enumerate(reversed(ids)):  # written out of order on purpose
        height, width = H + index % 3, W + index % 4
        write_rgb(root / ISIC_IMAGES / f"{sample_id}.jpg", random_rgb(rng, height, width))
        binary = (blob_labels(rng, height, width, 1) > 0).astype(np.uint8)
        write_grey(root / ISIC_MASKS / f"{sample_id}_segmentation.png", binary * 255)
        expected.masks[sample_id] = binary
    (root / ISIC_IMAGES / "LICENSE.txt").write_text("CC-BY-NC\n")
    (root / ISIC_IMAGES / "ATTRIBUTION.txt").write_text("ISIC archive\n")
    return expected


# --------------------------------------------------------------------------- SegPC 2021


def segpc_cell(
    height: int, width: int, top: int, left: int, *, nucleus: int = 40, cytoplasm: int = 20
) -> np.ndarray:
    """One cell mask: an 8x10 cytoplasm block with a 4x4 nucleus inside."""
    mask = np.zeros((height, width), np.uint8)
    mask[top : top + 8, left : left + 10] = cytoplasm
    mask[top + 2 : top + 6, left + 3 : left + 7] = nucleus
    return mask


def write_segpc2021(
    root: Path,
    layout: str = "split",
    nucleus: int = 40,
    cytoplasm: int = 20,
    seed: int = 0,
) -> Expected:
    """``x/<image>.bmp`` + ``y/<image>_<k>.bmp`` cell masks (nucleus inside cytoplasm).

    ``layout="split"``: ``train/`` (3 images) + ``validation/`` (2); ``"flat"``: ``x``/``y``
    with 3 images. Image ``k`` has two overlapping cells, the second written later.
    """
    rng = np.random.default_rng(seed)
    expected = Expected()
    groups = (
        [("train", "train", 3), ("validation", "test", 2)]
        if layout == "split"
        else [("", "train", 3)]
    )
    number = 100
    for folder, split, n in groups:
        base = root / folder if folder else root
        for _ in range(n):
            number += 1
            image_id = str(number)
            image = random_rgb(rng)
            write_rgb(base / "x" / f"{image_id}.bmp", image)
            merged = np.zeros((H, W), np.uint8)
            for k, (top, left) in enumerate([(1, 1), (6, 8)], start=1):
                cell = segpc_cell(H, W, top, left, nucleus=nucleus, cytoplasm=cytoplasm)
                write_grey(base / "y" / f"{image_id}_{k}.bmp", cell)
                merged[cell == cytoplasm] = 1
                merged[cell == nucleus] = 2
            expected.splits[image_id] = split
            expected.masks[image_id] = merged
            expected.images[image_id] = image
    return expected


# --------------------------------------------------------------------------- ACDC


def write_nifti(path: Path, data: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine=np.eye(4)), str(path))


def acdc_labels(rng: np.random.Generator, depth: int = 3) -> np.ndarray:
    """(X=W, Y=H, Z) label volume with RV=1, myocardium=2 ring, LV=3 and an empty slice."""
    labels = np.zeros((W, H, depth), np.uint8)
    for z in range(depth - 1):  # the last slice stays empty (apex)
        cx, cy = int(rng.integers(8, 14)), int(rng.integers(7, 12))
        labels[cx - 5 : cx + 5, cy - 5 : cy + 5, z] = 2
        labels[cx - 3 : cx + 3, cy - 3 : cy + 3, z] = 3
        labels[1:4, 1:5, z] = 1
    return labels


def write_acdc(
    root: Path, n_training: int = 10, n_testing: int | None = 2, seed: int = 0
) -> Expected:
    """``training/patientNNN`` (+ ``testing/``) with ED/ES frames, ``_gt``, ``Info.cfg``.

    ``n_testing=None`` writes every patient directly in ``root`` (flat layout).
    """
    rng = np.random.default_rng(seed)
    expected = Expected()
    folders = (
        [("training", n_training), ("testing", n_testing)]
        if n_testing is not None
        else [("", n_training)]
    )
    number = 0
    for folder, n in folders:
        for _ in range(n):
            number += 1
            patient = f"patient{number:03d}"
            pdir = (root / folder / patient) if folder else root / patient
            pdir.mkdir(parents=True, exist_ok=True)
            (pdir / "Info.cfg").write_text(
                "ED: 1\nES: 7\nGroup: NOR\nHeight: 180.0\nNbFrame: 30\nWeight: 80.0\n"
            )
            for frame in ("frame01", "frame07"):
                volume = rng.integers(0, 1000, (W, H, 3)).astype(np.int16)
                labels = acdc_labels(rng)
                write_nifti(pdir / f"{patient}_{frame}.nii.gz", volume)
                write_nifti(pdir / f"{patient}_{frame}_gt.nii.gz", labels)
                for z in range(3):
                    sample_id = f"{patient}_{frame}_slice{z:02d}"
                    expected.masks[sample_id] = labels[:, :, z].T.copy()
                    expected.groups[sample_id] = patient
            write_nifti(pdir / f"{patient}_4d.nii.gz", np.zeros((W, H, 3, 2), np.int16))
    return expected


# --------------------------------------------------------------------------- image folder


def write_image_folder(root: Path, layout: str = "pooled", seed: int = 0) -> Expected:
    """``images/`` + ``masks/`` (``"pooled"``) or ``train|test/{images,masks}`` (``"split"``).

    Mixes formats: PNG, TIFF, JPEG and BMP images; PNG and TIFF 0/255 masks.
    """
    import tifffile

    rng = np.random.default_rng(seed)
    expected = Expected()
    groups = (
        [("", "train", 4)] if layout == "pooled" else [("train", "train", 3), ("test", "test", 2)]
    )
    suffixes = [".png", ".tif", ".bmp", ".jpg"]
    index = 0
    for folder, split, n in groups:
        base = root / folder if folder else root
        for _ in range(n):
            stem = f"slide_{index:02d}"
            suffix = suffixes[index % len(suffixes)]
            image = random_rgb(rng)
            if suffix == ".tif":
                (base / "images").mkdir(parents=True, exist_ok=True)
                tifffile.imwrite(base / "images" / f"{stem}.tif", image, photometric="rgb")
            else:
                write_rgb(base / "images" / f"{stem}{suffix}", image)
            binary = (blob_labels(rng) > 0).astype(np.uint8)
            if index % 2:
                (base / "masks").mkdir(parents=True, exist_ok=True)
                tifffile.imwrite(base / "masks" / f"{stem}.tif", binary * 255)
            else:
                write_grey(base / "masks" / f"{stem}.png", binary * 255)
            expected.splits[stem] = split
            expected.masks[stem] = binary
            if suffix != ".jpg":
                expected.images[stem] = image
            index += 1
    return expected
