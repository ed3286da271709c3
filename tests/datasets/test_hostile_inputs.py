"""Hostile or inconsistent raw files are refused with the file named; nothing else is lost.

- a PNG, BMP or JPEG whose header claims 100000 x 100000 pixels (OpenCV refuses to
  allocate it): named, and every other problem of the dataset is still reported;
- a mask label the model cannot learn (7 in a binary dataset): named, with the setting;
- an id holding ``::`` (the cached model inputs' key separator): named at ingestion.
"""

from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path

import pytest
from raw_dataset_writers import (
    ISIC_IMAGES,
    ISIC_MASKS,
    write_glas,
    write_grey,
    write_image_folder,
    write_isic2018,
)

from sa2_pipeline.datasets.registry import load_raw_dataset
from sa2_pipeline.datasets.schema import DatasetValidationError


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def huge_png(width: int = 100_000, height: int = 100_000) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _chunk(b"IEND", b""))


def huge_bmp(width: int = 100_000, height: int = 100_000) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return struct.pack("<2sIHHI", b"BM", 14 + 40 + 64, 0, 0, 54) + info + b"\x00" * 64


def huge_jpeg(width: int = 65_000, height: int = 65_000) -> bytes:
    """Baseline JPEG header (quantisation, frame, Huffman tables, scan), no real data."""
    dqt = b"\xff\xdb" + struct.pack(">H", 67) + b"\x00" + bytes([1] * 64)
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    dc_bits, dc_values = bytes([0, 1, 5, 1, 1, 1, 1, 1, 1] + [0] * 7), bytes(range(12))
    dht = b"\xff\xc4" + struct.pack(">H", 19 + len(dc_values)) + b"\x00" + dc_bits + dc_values
    ac_bits = bytes([0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7D])
    ac_values = bytes.fromhex(
        "01020300041105122131410613516107227114328191a1082342b1c11552d1f02433627282090a16"
        "1718191a25262728292a3435363738393a434445464748494a535455565758595a63646566676869"
        "6a737475767778797a838485868788898a92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6"
        "b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae1e2e3e4e5e6e7e8e9eaf1f2f3f4f5f6f7f8"
        "f9fa")
    dht += b"\xff\xc4" + struct.pack(">H", 19 + len(ac_values)) + b"\x10" + ac_bits + ac_values
    sos = b"\xff\xda" + struct.pack(">HB", 8, 1) + b"\x01\x00" + b"\x00\x3f\x00"
    return b"\xff\xd8" + dqt + sof + dht + sos + b"\x00" * 16 + b"\xff\xd9"


HUGE = {".png": huge_png, ".bmp": huge_bmp, ".jpg": huge_jpeg}


def _problems(caught: pytest.ExceptionInfo) -> dict[str, str]:
    return {Path(path).name: reason for path, reason in caught.value.problems}


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".jpg"])
def test_folder_oversized_header_is_named_and_the_rest_still_checked(tmp_path, suffix):
    write_image_folder(tmp_path)  # slide_00.png, slide_01.tif, slide_02.bmp, slide_03.jpg
    stem = {".png": "slide_00", ".bmp": "slide_02", ".jpg": "slide_03"}[suffix]
    (tmp_path / "images" / f"{stem}{suffix}").write_bytes(HUGE[suffix]())
    (tmp_path / "masks" / "slide_01.tif").unlink()  # a second, unrelated problem
    with pytest.raises(DatasetValidationError) as caught:
        load_raw_dataset("folder", tmp_path, dataset_name="custom")
    problems = _problems(caught)
    assert "CV_IO_MAX_IMAGE_PIXELS" in problems[f"{stem}{suffix}"]
    assert "slide_01.tif" in str(caught.value) or "slide_01" in " ".join(problems)
    assert len(caught.value.problems) == 2


def test_glas_oversized_bmp_is_named_and_the_rest_still_checked(tmp_path):
    write_glas(tmp_path)
    (tmp_path / "train_1.bmp").write_bytes(huge_bmp())
    (tmp_path / "testA_1_anno.bmp").unlink()
    with pytest.raises(DatasetValidationError) as caught:
        load_raw_dataset("glas", tmp_path, dataset_name="glas")
    problems = _problems(caught)
    assert "CV_IO_MAX_IMAGE_PIXELS" in problems["train_1.bmp"]
    assert any("testA_1" in name for name in problems if name != "train_1.bmp")


def test_isic_oversized_jpeg_is_named_and_the_rest_still_checked(tmp_path):
    write_isic2018(tmp_path, n=4)
    images = sorted((tmp_path / ISIC_IMAGES).glob("*.jpg"))
    images[0].write_bytes(huge_jpeg())
    masks = sorted((tmp_path / ISIC_MASKS).glob("*.png"))
    masks[-1].unlink()
    with pytest.raises(DatasetValidationError) as caught:
        load_raw_dataset("isic2018", tmp_path, dataset_name="isic2018")
    problems = _problems(caught)
    assert "CV_IO_MAX_IMAGE_PIXELS" in problems[images[0].name]
    assert len(caught.value.problems) >= 2


def test_a_mask_label_the_model_cannot_learn_is_named(tmp_path):
    from sa2_pipeline.pipelines.data_ingestion.nodes import ingest_raw_dataset

    expected = write_image_folder(tmp_path)
    for mask in (tmp_path / "masks").iterdir():  # every mask as 0/1 class labels
        mask.unlink()
    for stem, binary in expected.masks.items():
        write_grey(tmp_path / "masks" / f"{stem}.png", binary)
    labels = expected.masks["slide_00"].copy()
    labels[10:14, 10:16] = 7
    write_grey(tmp_path / "masks" / "slide_00.png", labels)
    params = {"dataset": "custom", "format": "folder", "raw_dir": str(tmp_path),
              "synthetic": None, "mask_kind": "labels"}
    with pytest.raises(DatasetValidationError) as caught:
        ingest_raw_dataset(str(tmp_path), params, {"name": "sa2net", "num_classes": 1})
    problems = _problems(caught)
    assert list(problems) == ["slide_00.png"]
    assert "label(s) [7]" in problems["slide_00.png"]
    assert "model.num_classes = 1" in problems["slide_00.png"]
    # the same data is fine for a model with 8 classes
    manifest, _, masks, _ = ingest_raw_dataset(str(tmp_path), params,
                                               {"name": "sa2net", "num_classes": 8})
    assert int(masks["slide_00"].max()) == 7 and len(manifest) == 4


def test_an_id_with_the_key_separator_is_refused_at_ingestion(tmp_path):
    write_image_folder(tmp_path)
    for folder, suffix in (("images", ".png"), ("masks", ".png")):
        shutil.move(tmp_path / folder / f"slide_00{suffix}",
                    tmp_path / folder / f"slide::00{suffix}")
    with pytest.raises(DatasetValidationError) as caught:
        load_raw_dataset("folder", tmp_path, dataset_name="custom")
    problems = _problems(caught)
    assert list(problems) == ["slide::00.png"]
    assert "contains '::'" in problems["slide::00.png"]
