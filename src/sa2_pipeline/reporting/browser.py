"""Render a page in headless Chromium: check its images loaded, or take a screenshot.

Used by the report's browser test and to make the README's pipeline screenshot. Needs a
Chromium binary (Debian: ``apt-get install chromium``); nothing is fetched from the network
(background networking, component updates and sync are off, with a fresh profile).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import NamedTuple

__all__ = ["PageCheck", "check_page", "find_chromium", "screenshot", "screenshot_kedro_viz"]

_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
# Appended to a copy of the page: once everything has loaded, record on <body> how many
# images there are, how many decoded (naturalWidth > 0), how much text is visible, and how
# wide the page's content is (scrollWidth: wider than the window means a sideways scroll).
_PROBE = (
    "<script>window.addEventListener('load',function(){var i=[].slice.call(document.images);"
    "var ok=i.filter(function(x){return x.complete&&x.naturalWidth>0}).length;"
    "document.body.setAttribute('data-probe',i.length+':'+ok+':'+"
    "document.body.innerText.trim().length+':'+document.documentElement.scrollWidth+':'+"
    "window.innerWidth)})</script>"
)
_RESULT = re.compile(r'data-probe="(\d+):(\d+):(\d+):(\d+):(\d+)"')


class PageCheck(NamedTuple):
    """What the browser saw after the page's ``load`` event."""

    images: int
    images_loaded: int
    text_chars: int
    #: Width of the page's content in CSS px (``document.documentElement.scrollWidth``).
    page_width: int
    #: Width of the window it was laid out in (``window.innerWidth``).
    window_width: int


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary on PATH, or ``None``."""
    return next((p for p in map(shutil.which, _CANDIDATES) if p), None)


def _run(args: list[str], timeout: float) -> str:
    binary = find_chromium()
    if binary is None:
        raise FileNotFoundError("no chromium binary on PATH (apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        result = subprocess.run(
            [binary, *_FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    if result.returncode != 0:
        raise RuntimeError(f"chromium failed ({result.returncode}): {result.stderr[-2000:]}")
    return result.stdout


def check_page(
    html_file: str | Path, timeout: float = 120, width: int = 1280, height: int = 900
) -> PageCheck:
    """Load ``html_file`` (with a probe script added to a copy) in a ``width`` × ``height``
    window and report what rendered."""
    source = Path(html_file).read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="page-check-") as tmp:
        copy = Path(tmp) / "page.html"
        copy.write_text(source.replace("</body>", _PROBE + "</body>"), encoding="utf-8")
        dom = _run(
            [
                f"--window-size={width},{height}",
                "--virtual-time-budget=10000",
                "--dump-dom",
                copy.as_uri(),
            ],
            timeout,
        )
    match = _RESULT.search(dom)
    if match is None:
        raise RuntimeError(f"{html_file}: the page's load event never ran in chromium")
    return PageCheck(*(int(g) for g in match.groups()))


def screenshot(
    url: str,
    out: str | Path,
    width: int = 1400,
    height: int = 900,
    wait_ms: int = 8000,
    timeout: float = 180,
) -> Path:
    """Save a PNG screenshot of ``url`` (a ``file://`` or ``http://`` address) to ``out``."""
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    _run(
        [
            f"--screenshot={out}",
            f"--window-size={width},{height}",
            f"--virtual-time-budget={wait_ms}",
            "--hide-scrollbars",
            url,
        ],
        timeout,
    )
    if not out.is_file():
        raise RuntimeError(f"chromium wrote no screenshot to {out}")
    return out


def screenshot_kedro_viz(
    build_dir: str | Path,
    out: str | Path,
    pipeline: str = "__default__",
    width: int = 1600,
    height: int = 1000,
) -> Path:
    """Screenshot of a ``kedro viz build`` folder, served on 127.0.0.1 for the duration.

    The page is opened through a same-origin helper that switches kedro-viz's feature-hint
    tour off (its ``KedroViz`` localStorage entry), so the graph is not covered by it.
    """
    import functools
    import http.server
    import threading

    build_dir = Path(build_dir).resolve()
    if not (build_dir / "index.html").is_file():
        raise FileNotFoundError(f"{build_dir}: no index.html (run `kedro viz build` first)")
    helper = build_dir / "_screenshot.html"
    helper.write_text(
        "<!doctype html><script>localStorage.setItem('KedroViz',"
        "JSON.stringify({showFeatureHints:false}));"
        f"location.replace('index.html?pid={pipeline}')</script>",
        encoding="utf-8",
    )

    class _Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:  # no access log on stderr
            pass

    handler = functools.partial(_Quiet, directory=str(build_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/_screenshot.html"
        return screenshot(url, out, width, height, wait_ms=15000)
    finally:
        server.shutdown()
        server.server_close()
        helper.unlink(missing_ok=True)
