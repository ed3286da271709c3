"""Manifest schema types: content hashes and raw samples."""

import hashlib
from pathlib import Path

import numpy as np
import pytest

from sa2_pipeline.datasets.schema import RawSample, sha256_array, sha256_file


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
