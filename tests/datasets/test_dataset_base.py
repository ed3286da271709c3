"""Shared dataset types and the atomic file helpers they rely on."""

import hashlib
from pathlib import Path

import numpy as np
import pytest

from sa2_pipeline.datasets.base import RawSample, sha256_array, sha256_file
from sa2_pipeline.io_utils import atomic_directory, atomic_write_bytes, atomic_write_text


def test_sha256_file_matches_hashlib(tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    data = bytes(range(256)) * 5000
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_sha256_array_depends_on_content_shape_and_dtype_not_layout() -> None:
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert sha256_array(a) == sha256_array(a.copy())
    assert sha256_array(a.T) == sha256_array(np.ascontiguousarray(a.T))
    assert sha256_array(a) != sha256_array(a.reshape(4, 3))
    assert sha256_array(a) != sha256_array(a.astype(np.int16))
    b = a.copy()
    b[0, 0] = 1
    assert sha256_array(a) != sha256_array(b)


def test_raw_sample_rejects_unknown_split(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="split 'validation'"):
        RawSample("x", "validation", tmp_path / "x.tif", tmp_path / "x.xml")


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "file.txt"
    atomic_write_text(target, "one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["file.txt"]


def test_atomic_directory_commits_on_success(tmp_path: Path) -> None:
    final = tmp_path / "out"
    with atomic_directory(final) as tmp:
        assert tmp.parent == tmp_path
        assert not final.exists()
        (tmp / "a.txt").write_text("a")
    assert (final / "a.txt").read_text() == "a"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_atomic_directory_removes_temp_on_failure(tmp_path: Path) -> None:
    final = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic_directory(final) as tmp:
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_directory_existing_target(tmp_path: Path) -> None:
    final = tmp_path / "out"
    final.mkdir()
    with atomic_directory(final) as tmp:  # an empty folder is simply replaced
        (tmp / "v1").write_text("1")
    with pytest.raises(FileExistsError), atomic_directory(final):
        pass
    with atomic_directory(final, overwrite=True) as tmp:
        (tmp / "v2").write_text("2")
    assert [p.name for p in final.iterdir()] == ["v2"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_limit_side_caps_the_longer_side_only_when_needed() -> None:
    from sa2_pipeline.datasets.base import limit_side

    image = np.zeros((300, 120, 3), np.uint8)
    image[:, 60:] = 200
    mask = np.zeros((300, 120), np.uint8)
    mask[:, 60:] = 2
    small, small_mask = limit_side(image, mask, 100)
    assert small.shape == (100, 40, 3) and small_mask.shape == (100, 40)
    assert set(np.unique(small_mask)) == {0, 2}
    assert small[:, :20].max() == 0 and small[:, 20:].min() == 200
    same, same_mask = limit_side(image, mask, 300)
    assert same is image and same_mask is mask
    grey, _ = limit_side(np.zeros((300, 120, 1), np.uint8), mask, 100)
    assert grey.shape == (100, 40, 1)
    with pytest.raises(ValueError, match="max_side"):
        limit_side(image, mask, 0)


def test_warn_unread_lists_only_files_the_adapter_did_not_read(tmp_path, caplog) -> None:
    import logging

    from sa2_pipeline.datasets.base import warn_unread

    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    read = [images / "a.png", masks / "a.png"]
    for path in [*read, images / "notes.doc", masks / ".DS_Store", masks / "LICENSE.txt"]:
        path.write_bytes(b"x")
    (images / "sub").mkdir()  # folders are not files
    with caplog.at_level(logging.WARNING):
        warn_unread("Mine", tmp_path, [images, masks, tmp_path / "absent"], set(read),
                    skip=lambda p: p.suffix == ".txt")
    assert "Mine at" in caplog.text and "ignored 1 file(s)" in caplog.text
    assert "images/notes.doc" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        warn_unread("Mine", tmp_path, [masks], set(read), skip=lambda p: p.suffix == ".txt")
    assert caplog.text == ""


def test_duplicate_ids_name_the_later_file_and_the_first() -> None:
    from sa2_pipeline.datasets.base import duplicate_ids

    items = [("a", Path("x/a.png")), ("b", Path("x/b.png")), ("a", Path("y/a.tif")),
             ("a", Path("z/a.bmp"))]
    assert duplicate_ids(items) == [
        ("y/a.tif", "duplicate id 'a' (also x/a.png)"),
        ("z/a.bmp", "duplicate id 'a' (also x/a.png)"),
    ]
    assert duplicate_ids(items[:2]) == []
