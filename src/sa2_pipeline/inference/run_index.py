"""``index.html``: one self-contained page per inference run, one row per input.

Each row shows the overlay thumbnail (objects outlined; embedded as a data URI, so the page
is a single file that can be mailed or archived), the numbers a pathologist reads (object
count, density per mm² of tissue, area median and quartiles, foreground fraction, pixel
size) and links (relative, so the folder can move) to the mask, the OME-TIFF, the instance
labels and the QuPath GeoJSON. It is rebuilt with ``manifest.json`` after every run, from
all the records present, so split runs (``num_parts``) end with one index.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from sa2_pipeline.io_utils import atomic_write_text

#: The record fields copied into the manifest and shown in the index.
SLIDE_NUMBERS = (
    "width", "height", "mpp", "level", "foreground_fraction", "object_count",
    "tissue_area_mm2", "object_density_per_mm2", "object_area_px_median",
    "object_area_px_q1", "object_area_px_q3", "object_area_um2_median",
    "object_area_um2_q1", "object_area_um2_q3", "instance_method",
)
#: Longest side of a thumbnail in the index (px).
INDEX_THUMBNAIL = 360

_LINKS = (("geojson", "QuPath GeoJSON"), ("ome", "mask OME-TIFF"),
          ("labels", "labels OME-TIFF"), ("mask", "mask"), ("summary", "summary CSV"),
          ("objects", "objects CSV"))

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;width:100%}
td,th{border-bottom:1px solid #ddd;padding:.5em;text-align:left;vertical-align:top}
img{max-width:360px;height:auto;border:1px solid #ccc}
dl{display:grid;grid-template-columns:max-content auto;gap:.15em 1em;margin:0}
dt{color:#666}dd{margin:0}.failed{color:#a00}
"""


def _thumbnail_uri(path: Path) -> str | None:
    """The overlay, shrunk to :data:`INDEX_THUMBNAIL`, as a PNG data URI (None if absent)."""
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        return None
    scale = INDEX_THUMBNAIL / max(image.shape[:2])
    if scale < 1:
        image = cv2.resize(image, (max(round(image.shape[1] * scale), 1),
                                   max(round(image.shape[0] * scale), 1)),
                           interpolation=cv2.INTER_AREA)
    ok, png = cv2.imencode(".png", image)
    return "data:image/png;base64," + base64.b64encode(png.tobytes()).decode() if ok else None


def _number(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else html.escape(str(value))


def _numbers(record: dict[str, Any]) -> str:
    unit = "µm²" if record.get("mpp") else "px"
    area = "um2" if record.get("mpp") else "px"
    rows = [
        ("objects", _number(record.get("object_count"))),
        ("density", "–" if record.get("object_density_per_mm2") is None else
         f"{_number(record['object_density_per_mm2'])} per mm² of tissue"),
        (f"area median ({unit})", _number(record.get(f"object_area_{area}_median"))),
        (f"area IQR ({unit})", f"{_number(record.get(f'object_area_{area}_q1'))} – "
                              f"{_number(record.get(f'object_area_{area}_q3'))}"),
        ("tissue", "–" if record.get("tissue_area_mm2") is None else
         f"{_number(record['tissue_area_mm2'], 3)} mm²"),
        ("foreground", "–" if record.get("foreground_fraction") is None else
         f"{100 * record['foreground_fraction']:.1f} %"),
        ("size", f"{_number(record.get('width'))} × {_number(record.get('height'))} px"),
        ("pixel size", "unknown" if not record.get("mpp") else f"{record['mpp']:.4g} µm/px"),
        ("objects by", _number(record.get("instance_method"))),
    ]
    return "<dl>" + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"


def index_html(out_dir: Path, manifest: dict[str, Any]) -> str:
    """The page of a run folder (module docstring)."""
    model = manifest.get("model") or {}
    title = f"Segmentation results: {model.get('name', '?')} v{model.get('version', '?')}"
    rows = []
    for name in sorted(manifest.get("inputs", {})):
        record = manifest["inputs"][name]
        outputs = record.get("outputs", {})
        uri = _thumbnail_uri(out_dir / outputs["overlay"]) if "overlay" in outputs else None
        image = (f'<img src="{uri}" alt="overlay of {html.escape(name)}">' if uri
                 else "no overlay")
        links = "<br>".join(f'<a href="{html.escape(outputs[key])}">{label}</a>'
                            for key, label in _LINKS if key in outputs)
        rows.append(f"<tr><td><b>{html.escape(name)}</b></td><td>{image}</td>"
                    f"<td>{_numbers(record)}</td><td>{links}</td></tr>")
    failed = "".join(f'<li class="failed">{html.escape(k)}: {html.escape(v)}</li>'
                     for k, v in sorted((manifest.get("failed") or {}).items()))
    return (
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f"<p>{len(rows)} input(s); model {html.escape(str(model.get('uri', '')))}. Open a "
        "GeoJSON in QuPath (File → Import objects, or drag it onto the slide) and an "
        "OME-TIFF in QuPath or napari.</p>"
        "<table><thead><tr><th>input</th><th>objects outlined</th><th>numbers</th>"
        f"<th>files</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        + (f"<h2>Failed</h2><ul>{failed}</ul>" if failed else "")
        + "</body></html>\n"
    )


def write_index(out_dir: Path, manifest: dict[str, Any]) -> Path:
    """Write ``<out_dir>/index.html`` atomically."""
    return atomic_write_text(Path(out_dir) / "index.html", index_html(Path(out_dir), manifest))
