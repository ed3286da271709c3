"""The HTML report in a real browser (headless Chromium): every image decodes, text shows.

CI installs Chromium (.ci/run); elsewhere the test is skipped when no binary is on PATH.
"""

from __future__ import annotations

import numpy as np
import pytest

from sa2_pipeline.reporting.browser import check_page, find_chromium, screenshot

pytestmark = pytest.mark.skipif(find_chromium() is None, reason="chromium not installed")


def test_report_renders_with_every_image(tmp_path, make_report):
    (_, page), _ = make_report("glas")
    path = tmp_path / "report.html"
    path.write_text(page, encoding="utf-8")
    check = check_page(path)
    assert check.images == 3
    assert check.images_loaded == check.images
    assert check.text_chars > 500


def test_broken_image_is_detected(tmp_path):
    path = tmp_path / "broken.html"
    path.write_text(
        "<!doctype html><html><body><p>text</p>"
        '<img src="data:image/png;base64,AAAA"></body></html>',
        encoding="utf-8",
    )
    check = check_page(path)
    assert (check.images, check.images_loaded) == (1, 0)


def test_screenshot_of_the_report_is_not_blank(tmp_path, make_report):
    from PIL import Image

    (_, page), _ = make_report("glas")
    path = tmp_path / "report.html"
    path.write_text(page, encoding="utf-8")
    png = screenshot(path.as_uri(), tmp_path / "shot.png", width=1000, height=1400)
    pixels = np.asarray(Image.open(png).convert("L"))
    assert pixels.std() > 5  # a blank (uniform) page would be ~0


def test_report_is_not_wider_than_a_1280_px_window(tmp_path):
    """The per-image table of a real run (14 columns) scrolls inside its container; the
    page itself never scrolls sideways in a 1280 px window."""
    import pandas as pd

    from sa2_pipeline.reporting.report import build_report

    columns = ["dice", "iou", "hd95", "boundary_f1", "aji", "pq", "dq", "sq",
               "obj_precision", "obj_recall", "obj_f1", "n_true_objects", "n_pred_objects"]
    rng = np.random.default_rng(0)
    per_image = pd.DataFrame(rng.uniform(0.6, 0.99, (8, len(columns))), columns=columns)
    per_image.insert(0, "id", [f"SYN-TEST-{i:03d}" for i in range(8)])
    per_image[["n_true_objects", "n_pred_objects"]] = 141.0
    _, page = build_report(title="T", test_summary={"primary_model": "m"},
                           per_image=per_image, registration={}, figures={})
    path = tmp_path / "report.html"
    path.write_text(page, encoding="utf-8")
    check = check_page(path, width=1280)
    assert check.window_width == 1280
    assert check.page_width <= 1280
