"""The shared verification workflow: listing and pairing helpers."""

from pathlib import Path


def test_warn_unread_lists_only_files_the_adapter_did_not_read(tmp_path, caplog) -> None:
    import logging

    from sa2_pipeline.datasets.verify import warn_unread

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
    from sa2_pipeline.datasets.verify import duplicate_ids

    items = [("a", Path("x/a.png")), ("b", Path("x/b.png")), ("a", Path("y/a.tif")),
             ("a", Path("z/a.bmp"))]
    assert duplicate_ids(items) == [
        ("y/a.tif", "duplicate id 'a' (also x/a.png)"),
        ("z/a.bmp", "duplicate id 'a' (also x/a.png)"),
    ]
    assert duplicate_ids(items[:2]) == []
