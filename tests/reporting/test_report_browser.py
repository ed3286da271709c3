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
