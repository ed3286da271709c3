"""ACDC adapter: NIfTI frames to 2D slices, patient splits and groups, every problem."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from raw_dataset_writers import Expected, H, W, write_acdc, write_nifti

from sa2_pipeline.datasets.acdc import acdc_patient_splits, load_acdc, scale_to_uint8
from sa2_pipeline.datasets.schema import MANIFEST_COLUMNS, DatasetValidationError

SLICES_PER_PATIENT = 2 * 3  # two frames (ED, ES) of three slices


@pytest.fixture
def acdc(tmp_path: Path) -> tuple[Path, Expected]:
    root = tmp_path / "acdc"
    return root, write_acdc(root, n_training=10, n_testing=2)


def _problems(root: Path) -> list[tuple[str, str]]:
    with pytest.raises(DatasetValidationError) as info:
        load_acdc(root)
    return info.value.problems


def _patient(root: Path, number: int) -> Path:
    return root / ("training" if number <= 10 else "testing") / f"patient{number:03d}"


def test_patient_split_rule() -> None:
    training = [f"patient{i:03d}" for i in range(1, 101)]
    testing = [f"patient{i:03d}" for i in range(101, 151)]
    with_test = acdc_patient_splits(training, testing)
    assert [with_test[p] for p in training] == ["train"] * 70 + ["val"] * 30
    assert {with_test[p] for p in testing} == {"test"}
    flat = acdc_patient_splits(training, None)
    assert [flat[p] for p in training] == ["train"] * 70 + ["val"] * 10 + ["test"] * 20


def test_slices_with_groups_and_split(acdc: tuple[Path, Expected]) -> None:
    root, expected = acdc
    dataset = load_acdc(root)
    manifest = dataset.manifest
    assert list(manifest.columns) == MANIFEST_COLUMNS
    assert len(manifest) == 12 * SLICES_PER_PATIENT
    assert manifest["id"].iloc[0] == "patient001_frame01_slice00"
    patients = manifest.groupby("split")["group"].unique().apply(sorted).to_dict()
    assert patients == {  # 10 training patients 70 / 30 by sorted id; testing/ is test
        "train": [f"patient{i:03d}" for i in range(1, 8)],
        "val": ["patient008", "patient009", "patient010"],
        "test": ["patient011", "patient012"],
    }
    assert dict(zip(manifest["id"], manifest["group"], strict=True)) == expected.groups
    for row in manifest.itertuples():
        image, mask = dataset.images[row.id], dataset.masks[row.id]
        assert image.dtype == np.uint8 and image.shape == (H, W, 3) == (row.height, row.width, 3)
        assert (image == image[..., :1]).all()  # grey replicated into RGB
        assert mask.dtype == np.uint8 and mask.shape == (H, W)
        np.testing.assert_array_equal(mask, expected.masks[row.id])
        assert set(np.unique(mask)) <= {0, 1, 2, 3}
        frame = row.id.rsplit("_", 1)[0]
        assert row.image_path.endswith(f"{row.group}/{frame}.nii.gz")
        assert row.annotation_path.endswith(f"{row.group}/{frame}_gt.nii.gz")
    assert set(np.unique(dataset.masks["patient001_frame01_slice00"])) == {0, 1, 2, 3}
    assert dataset.masks["patient001_frame01_slice02"].max() == 0  # empty slices are kept


def test_flat_layout_splits_70_10_20(tmp_path: Path) -> None:
    root = tmp_path / "acdc"
    write_acdc(root, n_training=10, n_testing=None)
    manifest = load_acdc(root).manifest
    assert manifest.groupby("split")["group"].nunique().to_dict() == {
        "train": 7,
        "val": 1,
        "test": 2,
    }


def test_archive_database_folder_is_found(tmp_path: Path) -> None:
    root = tmp_path / "acdc"
    write_acdc(root / "database", n_training=3, n_testing=1)
    manifest = load_acdc(root).manifest
    assert manifest["image_path"].iloc[0].startswith("database/training/patient001/")


def test_intensity_scaling_is_per_volume_percentiles() -> None:
    volume = np.arange(1000, dtype=np.int16).reshape(10, 10, 10)
    scaled = scale_to_uint8(volume)
    lo, hi = np.percentile(volume, (0.5, 99.5))
    assert scaled.dtype == np.uint8
    assert scaled.min() == 0 and scaled.max() == 255
    assert scaled.flat[500] == round((500 - lo) / (hi - lo) * 255)
    assert scale_to_uint8(np.full((2, 2, 2), 7.0)).max() == 0


# --------------------------------------------------------------------------- bad data


def test_missing_ground_truth(acdc: tuple[Path, Expected]) -> None:
    root, _ = acdc
    pdir = _patient(root, 3)
    (pdir / "patient003_frame07_gt.nii.gz").unlink()
    assert _problems(root) == [
        (
            str(pdir / "patient003_frame07.nii.gz"),
            f"missing ground truth {pdir / 'patient003_frame07_gt.nii.gz'}",
        )
    ]


def test_wrong_shape(acdc: tuple[Path, Expected]) -> None:
    root, _ = acdc
    pdir = _patient(root, 11)
    write_nifti(pdir / "patient011_frame01_gt.nii.gz", np.zeros((W, H, 4), np.uint8))
    assert _problems(root) == [
        (
            str(pdir / "patient011_frame01_gt.nii.gz"),
            f"ground truth shape ({W}, {H}, 4) differs from its image's ({W}, {H}, 3) "
            "(patient011_frame01.nii.gz)",
        )
    ]


def test_unexpected_label_values(acdc: tuple[Path, Expected]) -> None:
    root, _ = acdc
    pdir = _patient(root, 2)
    labels = np.zeros((W, H, 3), np.uint8)
    labels[0, 0, 0], labels[1, 1, 1] = 4, 255
    write_nifti(pdir / "patient002_frame01_gt.nii.gz", labels)
    write_nifti(pdir / "patient002_frame07_gt.nii.gz", labels.astype(np.float32) / 2)
    assert _problems(root) == [
        (
            str(pdir / "patient002_frame01_gt.nii.gz"),
            "unexpected label values 4, 255; expected 0 (background), 1 (RV), "
            "2 (myocardium), 3 (LV)",
        ),
        (
            str(pdir / "patient002_frame07_gt.nii.gz"),
            "non-integer label values (0, 2, 127.5); expected 0, 1, 2, 3",
        ),
    ]


def test_unreadable_volume(acdc: tuple[Path, Expected]) -> None:
    root, _ = acdc
    path = _patient(root, 5) / "patient005_frame01.nii.gz"
    path.write_bytes(path.read_bytes()[:40])  # truncated download
    problems = _problems(root)
    assert [p for p, _ in problems] == [str(path)]
    assert problems[0][1].startswith("unreadable NIfTI: ")


def test_duplicate_volume(acdc: tuple[Path, Expected]) -> None:
    root, _ = acdc
    src, dst = _patient(root, 1), _patient(root, 12)
    shutil.copy(src / "patient001_frame01.nii.gz", dst / "patient012_frame01.nii.gz")
    assert _problems(root) == [
        (
            str(dst / "patient012_frame01.nii.gz"),
            f"duplicate image: identical voxels to {src / 'patient001_frame01.nii.gz'}",
        )
    ]


def test_empty_patient_and_empty_root(tmp_path: Path, acdc: tuple[Path, Expected]) -> None:
    root, _ = acdc
    empty_patient = root / "training" / "patient013"
    empty_patient.mkdir()
    assert _problems(root) == [
        (
            str(empty_patient),
            "no frames found: expected 'patient013_frameMM.nii.gz' with "
            "'patient013_frameMM_gt.nii.gz'",
        )
    ]
    nothing = tmp_path / "nothing"
    nothing.mkdir()
    problems = _problems(nothing)
    assert problems[0][0] == str(nothing)
    assert "no ACDC patient folders found" in problems[0][1]
    assert str(nothing / "training") in problems[0][1]
