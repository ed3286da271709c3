"""Aperio ImageScope XML, the annotation format of MoNuSeg: two readers and a writer.

One ``Region`` polygon per nucleus::

    Annotations/Annotation/Regions/Region/Vertices/Vertex[@X, @Y]

``X`` is the column and ``Y`` the row, in pixels. :func:`parse_aperio_tree` is the
reference reader (ElementTree, vertex by vertex); :func:`parse_aperio_fast` reads the
usual layout in bulk and hands anything unusual back to it, with the same result and
the same errors. :func:`format_aperio_xml` writes the files the synthetic dataset uses.
"""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sa2_pipeline.datasets.schema import DatasetValidationError

__all__ = [
    "AnnotationError",
    "Region",
    "format_aperio_xml",
    "parse_aperio",
    "parse_aperio_fast",
    "parse_aperio_tree",
    "read_aperio_polygons",
]


class AnnotationError(ValueError):
    """An annotation file that cannot be parsed at all."""


@dataclass(frozen=True)
class Region:
    label: str  # e.g. "region #3 (Id=4)", used in error messages
    vertices: np.ndarray  # (K, 2) float64, columns x, y


def parse_aperio(xml_path: Path) -> list[Region]:
    """Parse every ``Region`` of an Aperio ImageScope XML file.

    Reads the file once; :func:`parse_aperio_fast` handles the usual layout, anything it
    does not vouch for goes through :func:`parse_aperio_tree` (same result, same errors).

    Raises:
        AnnotationError: Not parseable, wrong root element, or a non-numeric vertex.
    """
    try:
        data = Path(xml_path).read_bytes()
    except OSError as err:
        raise AnnotationError(f"unreadable annotation file: {err}") from err
    regions = parse_aperio_fast(data)
    return regions if regions is not None else parse_aperio_tree(data)


def parse_aperio_tree(data: bytes) -> list[Region]:
    """The reference parser: the whole document through ElementTree, vertex by vertex."""
    try:
        xml_root = ET.parse(io.BytesIO(data)).getroot()
    except ET.ParseError as err:
        raise AnnotationError(f"malformed XML: {err}") from err
    _check_root(xml_root)
    regions: list[Region] = []
    for index, region in enumerate(xml_root.iterfind(_REGION_PATH)):
        label = _region_label(index, region)
        coords: list[tuple[float, float]] = []
        for k, vertex in enumerate(region.iterfind("./Vertices/Vertex")):
            try:
                x, y = float(vertex.attrib["X"]), float(vertex.attrib["Y"])
            except (KeyError, ValueError) as err:
                raise AnnotationError(
                    f"{label}: vertex {k} has no numeric X/Y attributes ({vertex.attrib})"
                ) from err
            coords.append((x, y))
        regions.append(Region(label, _finite(label, np.asarray(coords, dtype=np.float64))))
    return regions


_REGION_PATH = "./Annotation/Regions/Region"
_XML_SPACE = b" \t\r\n"
_NUMBER_BYTES = b"0123456789.+-eE"
_BLOCK_OPEN, _BLOCK_CLOSE = b"<Vertices>", b"</Vertices>"
_BLOCK_MARK = "sa2-vertex-block"
_S = rb"[ \t\r\n]"
_FIELD_SEPARATORS = {  # between the '"'-split fields of a run of <Vertex .../> elements
    "head": re.compile(_S + rb"*<Vertex" + _S + rb"+X" + _S + rb"*=" + _S + rb"*"),
    "y": re.compile(_S + rb"+Y" + _S + rb"*=" + _S + rb"*"),
    "z": re.compile(_S + rb"+Z" + _S + rb"*=" + _S + rb"*"),
    "next": re.compile(_S + rb"*/>" + _S + rb"*<Vertex" + _S + rb"+X" + _S + rb"*=" + _S + rb"*"),
    "tail": re.compile(_S + rb"*/>" + _S + rb"*"),
}
_XML_DECLARATION = re.compile(rb"<\?xml[^>]*?\?>")
_ENCODING = re.compile(rb"""encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")
_FAST_ENCODINGS = {"utf-8", "utf8", "us-ascii", "ascii", "iso-8859-1", "latin-1", "latin1"}


def _plain_body(data: bytes) -> bytes | None:
    """The document after its BOM and XML declaration, or None when it has anything the
    fast reader does not handle (an unusual encoding, DOCTYPE, comments, CDATA,
    processing instructions, or the placeholder's own name)."""
    body = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
    declaration = _XML_DECLARATION.match(body)
    if declaration is not None:
        encoding = _ENCODING.search(declaration.group())
        if encoding is not None and encoding.group(1).decode().lower() not in _FAST_ENCODINGS:
            return None
        body = body[declaration.end() :]
    if b"<!" in body or b"<?" in body or _BLOCK_MARK.encode() in body:
        return None
    return body


def parse_aperio_fast(data: bytes) -> list[Region] | None:
    """Parse the usual ImageScope layout quickly, or return None to leave it to ElementTree.

    Every ``<Vertices>...</Vertices>`` element whose content is nothing but
    ``<Vertex X="..." Y="..." [Z="..."]/>`` elements (numeric values written with
    ``0-9 . + - e E``, double quotes, XML white space) is read in bulk from the bytes and
    replaced by an empty placeholder; ElementTree parses what is left (the regions and
    their attributes, a few elements per nucleus). The result is then identical to
    :func:`parse_aperio_tree`'s: such content is well-formed and its attribute values
    are the raw text. None (use the reference parser) for anything else: comments, CDATA,
    DOCTYPE or processing instructions, an unusual encoding, single quotes, a value that
    is not a plain number, any error.
    """
    body = _plain_body(data)
    if body is None:
        return None
    parts = body.split(_BLOCK_OPEN)
    blocks: list[bytes] = []
    skeleton = [data[: len(data) - len(body)], parts[0]]
    for part in parts[1:]:
        inner, closed, rest = part.partition(_BLOCK_CLOSE)
        content = inner.strip(_XML_SPACE)
        if not closed or (content and not (content.startswith(b"<") and content.endswith(b"/>"))):
            return None  # each block must hold whole elements (see _read_vertex_runs)
        skeleton += [b'<Vertices %s="%d"/>' % (_BLOCK_MARK.encode(), len(blocks)), rest]
        blocks.append(inner)
    runs = _read_vertex_runs(blocks)
    if runs is None:
        return None
    vertices, all_finite = runs
    try:
        xml_root = ET.fromstring(b"".join(skeleton))
    except ET.ParseError:
        return None  # the reference parser reports it, with the original's line numbers
    if xml_root.tag != "Annotations" or next(xml_root.iter("Vertex"), None) is not None:
        return None
    regions: list[Region] = []
    for index, region in enumerate(xml_root.iterfind(_REGION_PATH)):
        found = [child.get(_BLOCK_MARK) for child in region.findall("Vertices")]
        if len(found) == 1 and found[0] is not None:
            coords = vertices[int(found[0])]
        elif None in found:
            return None  # a <Vertices> element that is not one of the blocks
        else:
            coords = np.concatenate([vertices[int(i)] for i in found] or [_NO_VERTICES])
        label = _region_label(index, region)
        if not all_finite and not np.isfinite(coords).all():
            raise AnnotationError(f"{label}: non-finite vertex coordinates")
        regions.append(Region(label, coords))
    return regions


_NO_VERTICES = np.empty((0, 2), dtype=np.float64)


def _read_vertex_runs(blocks: list[bytes]) -> tuple[list[np.ndarray], bool] | None:
    """``(K, 2)`` float64 vertices of each block and whether all are finite, or None if a
    block is not a plain run of vertex elements.

    The blocks are joined and split at the double quotes: a run of ``n`` vertex elements
    gives ``p * n + 1`` fields (p = 4 without ``Z``, 6 with), values at the odd positions
    and fixed separators (``<Vertex X=``, `` Y=``, ``/>``, white space) in between.
    """
    joined = b"".join(blocks)
    n = joined.count(b"<")
    if n == 0:
        return [_NO_VERTICES] * len(blocks), True
    fields = joined.split(b'"')
    period = 6 if len(fields) > 5 and _FIELD_SEPARATORS["z"].fullmatch(fields[4]) else 4
    if len(fields) != period * n + 1:
        return None
    expected = [
        ("head", fields[:1]),
        ("y", fields[2::period]),
        ("next", fields[period:-1:period]),
        ("tail", fields[-1:]),
    ]
    if period == 6:
        expected.append(("z", fields[4::period]))
    for name, separators in expected:
        pattern = _FIELD_SEPARATORS[name]
        if not all(pattern.fullmatch(sep) for sep in set(separators)):
            return None
    values = fields[1::2]
    if b"".join(values).translate(None, _NUMBER_BYTES):
        return None  # white space, entities, names: leave the exact reading to ElementTree
    xy = fields[1::period] + fields[3::period]  # all X, then all Y
    try:
        flat = np.fromiter(map(float, xy), dtype=np.float64, count=2 * n)
    except ValueError:
        return None
    coords = np.column_stack([flat[:n], flat[n:]])
    ends = np.cumsum([block.count(b"<") for block in blocks]).tolist()
    pieces = [coords[start:end] for start, end in zip([0, *ends[:-1]], ends, strict=True)]
    return pieces, bool(np.isfinite(flat).all())


def _check_root(xml_root: ET.Element) -> None:
    if xml_root.tag != "Annotations":
        raise AnnotationError(
            f"not an Aperio ImageScope annotation: root element <{xml_root.tag}>, "
            "expected <Annotations>"
        )


def _region_label(index: int, region: ET.Element) -> str:
    region_id = region.get("Id")
    return f"region #{index}" + (f" (Id={region_id})" if region_id is not None else "")


def _finite(label: str, coords: np.ndarray) -> np.ndarray:
    vertices = coords.reshape(-1, 2)
    if not np.isfinite(vertices).all():
        raise AnnotationError(f"{label}: non-finite vertex coordinates")
    return vertices


def read_aperio_polygons(xml_path: Path) -> list[np.ndarray]:
    """Read the nucleus polygons of an Aperio ImageScope XML file.

    ``Attributes``, ``RegionAttributeHeaders`` and ``Plots`` elements are ignored.

    Args:
        xml_path: Annotation file.

    Returns:
        One ``(K, 2)`` float64 array of ``(x, y)`` vertices per ``Region``, in file order
        (not validated: see
        :func:`~sa2_pipeline.datasets.monuseg.rasterise.check_regions`).

    Raises:
        DatasetValidationError: The file is unreadable, not XML, not an Aperio
            annotation, or has a non-numeric vertex.
    """
    try:
        return [region.vertices for region in parse_aperio(Path(xml_path))]
    except AnnotationError as err:
        raise DatasetValidationError([(str(xml_path), str(err))]) from err


def format_aperio_xml(polygons: list[np.ndarray], decimals: int = 3) -> str:
    """Aperio ImageScope XML text with one ``Region`` per polygon, as in MoNuSeg.

    The inverse of :func:`read_aperio_polygons` (up to ``decimals`` rounding): includes
    the ``Attributes``, ``RegionAttributeHeaders`` and ``Plots`` elements real files have.

    Args:
        polygons: ``(K, 2)`` arrays of ``(x, y)`` vertices.
        decimals: Digits after the decimal point written for each coordinate.

    Returns:
        The XML document.
    """
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<Annotations MicronsPerPixel="0.252000">',
        '<Annotation Id="1" Name="" ReadOnly="0" NameReadOnly="0" LineColorReadOnly="0" '
        'Incremental="0" Type="4" LineColor="65280" Visible="1" Selected="1" '
        'MarkupImagePath="" MacroName="">',
        "<Attributes>",
        '<Attribute Name="Description" Id="0" Value=""/>',
        "</Attributes>",
        "<Regions>",
        "<RegionAttributeHeaders>",
        '<AttributeHeader Id="9999" Name="Region" ColumnWidth="-1"/>',
        '<AttributeHeader Id="9997" Name="Length" ColumnWidth="-1"/>',
        '<AttributeHeader Id="9996" Name="Area" ColumnWidth="-1"/>',
        "</RegionAttributeHeaders>",
    ]
    vertex_line = f'<Vertex X="%.{decimals}f" Y="%.{decimals}f" Z="0"/>'
    for index, polygon in enumerate(polygons, start=1):
        vertices = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
        closed = np.vstack([vertices, vertices[:1]])
        x, y = closed[:, 0], closed[:, 1]
        area = 0.5 * abs(float(x[:-1] @ y[1:] - y[:-1] @ x[1:]))
        length = float(np.hypot(np.diff(x), np.diff(y)).sum())
        lines.append(
            f'<Region Id="{index}" Type="0" Zoom="1" Selected="0" ImageLocation="" '
            f'ImageFocus="-1" Length="{length:.1f}" Area="{area:.1f}" Text="" '
            f'NegativeROA="0" InputRegionId="0" Analyze="1" DisplayId="{index}">'
        )
        lines.append("<Attributes/>")
        lines.append("<Vertices>")
        lines += [vertex_line % (vx, vy) for vx, vy in vertices.tolist()]
        lines.append("</Vertices>")
        lines.append("</Region>")
    lines += ["</Regions>", "<Plots/>", "</Annotation>", "</Annotations>", ""]
    return "\n".join(lines)
