"""Detection of new and changed slides by content hash."""

from __future__ import annotations

import pandas as pd

from sa2_pipeline.retraining.detect import (
    compare_manifests,
    detect_changes,
    scan_raw_folder,
    write_inventory,
)


def _manifest(rows):
    return pd.DataFrame(rows, columns=["id", "split", "image_sha256", "mask_sha256"])


def test_compare_manifests_finds_new_changed_removed_and_test_rows():
    old = _manifest([("a", "train", "1", "m1"), ("b", "train", "2", "m2"),
                     ("t", "test", "3", "m3"), ("gone", "train", "4", "m4")])
    new = _manifest([("a", "train", "1", "m1"), ("b", "train", "2", "CHANGED"),
                     ("t", "test", "3", "m3"), ("c", "train", "5", "m5"),
                     ("t2", "test", "6", "m6")])
    changes = compare_manifests(old, new)
    assert changes.new == ("c", "t2")
    assert changes.changed == ("b",)
    assert changes.removed == ("gone",)
    assert changes.test_affected == ("t2",)
    assert changes.n_new_images == 3
    assert not changes.nothing_new
    assert compare_manifests(old, old).nothing_new
    first = compare_manifests(None, new)
    assert first.new == ("a", "b", "c", "t", "t2") and first.test_affected == ()


def test_detect_uses_the_adapter_only_when_files_changed(tmp_path):
    raw = tmp_path / "raw"
    (raw / "sub").mkdir(parents=True)
    (raw / "sub" / "x.tif").write_bytes(b"image")
    (raw / ".gitkeep").write_text("")
    manifest_path = tmp_path / "manifest.csv"
    frame = _manifest([("x", "train", "h", "m")])
    frame.to_csv(manifest_path, index=False)
    inventory = tmp_path / "inventory.json"
    calls = []

    def build():
        calls.append(1)
        return frame

    first = detect_changes(raw, manifest_path, inventory, build)
    assert not first.fast_path and first.changes.nothing_new and calls == [1]
    assert set(first.inventory) == {"sub/x.tif"}  # hidden files are not data
    second = detect_changes(raw, manifest_path, inventory, build)
    assert second.fast_path and calls == [1]
    assert second.raw_digest == first.raw_digest

    (raw / "sub" / "x.tif").write_bytes(b"edited")   # same name, new content
    third = detect_changes(raw, manifest_path, inventory, lambda: _manifest(
        [("x", "train", "h2", "m")]))
    assert not third.fast_path and third.changes.changed == ("x",)
    assert third.raw_digest != first.raw_digest
    # still not recorded as seen: the next check verifies again
    assert not detect_changes(raw, manifest_path, inventory, build).fast_path


def test_inventory_of_another_manifest_is_not_trusted(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "x.tif").write_bytes(b"image")
    manifest_path = tmp_path / "manifest.csv"
    _manifest([("x", "train", "h", "m")]).to_csv(manifest_path, index=False)
    write_inventory(tmp_path / "inv.json", scan_raw_folder(raw), manifest_path)
    _manifest([("y", "train", "h", "m")]).to_csv(manifest_path, index=False)  # re-ingested
    result = detect_changes(raw, manifest_path, tmp_path / "inv.json",
                            lambda: _manifest([("x", "train", "h", "m")]))
    assert not result.fast_path and result.changes.new == ("x",)
