"""A self-contained report: Markdown (figures beside it) and HTML (figures embedded)."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping
from typing import Any

import pandas as pd


def figure_png(fig: Any) -> bytes:
    """PNG bytes of a figure (already-rendered PNG bytes pass through)."""
    if isinstance(fig, bytes | bytearray):
        return bytes(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def _table(rows: list[tuple[str, str]]) -> str:
    lines = ["| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def comparison_table(test_summary: Mapping[str, Any]) -> pd.DataFrame:
    """One row per model: fold mean +- std and the final member (fold ensemble) scores."""
    rows = []
    for name, entry in test_summary.get("models", {}).items():
        row: dict[str, Any] = {"model": name, "folds": len(entry["members"]) - (
            1 if "ensemble" in entry["members"] else 0)}
        for metric, mean in entry["fold_mean"].items():
            row[f"{metric} (folds)"] = f"{mean:.4f} ± {entry['fold_std'][metric]:.4f}"
        for metric, value in entry["final"].items():
            row[f"{metric} ({entry['final_member']})"] = f"{value:.4f}"
        rows.append(row)
    return pd.DataFrame(rows)


def primary_bundle(trained_models: Mapping[str, Mapping[str, Any]],
                   primary: str) -> Mapping[str, Any]:
    """The first (in key order) trained bundle of the primary model."""
    return next(b for _, b in sorted(trained_models.items()) if b["model_name"] == primary)


def model_description(bundle: Mapping[str, Any]) -> dict[str, Any]:
    """The report's "Model" rows: name, constructor arguments, input order, resize size."""
    return {"model": bundle["model_name"], **bundle["init_kwargs"],
            "input": bundle.get("input_convention", {}).get("channel_order", "rgb"),
            "resize_to": bundle.get("resize_to")}


def runs_table(trained_models: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """One row per trained (model, fold) bundle: best epoch, validation Dice, resume..."""
    keys = ("best_epoch", "best_val_dice", "epochs_run", "stopped_early", "resumed_from_epoch")
    return pd.DataFrame([
        {"run": key, **{k: b["metadata"].get(k) for k in keys}}
        for key, b in sorted(trained_models.items())
    ])


def build_report(
    *,
    title: str,
    model_meta: Mapping[str, Any],
    model_desc: Mapping[str, Any],
    test_summary: Mapping[str, Any],
    per_image: pd.DataFrame,
    registration: Mapping[str, Any],
    figures: Mapping[str, Any],
    runs: pd.DataFrame | None = None,
) -> tuple[str, str]:
    """Return ``(markdown, html)``.

    Args:
        runs: One row per trained (model, fold): best epoch, validation Dice...
        figures: ``{name: Figure or PNG bytes}``; the Markdown links
            ``figures/<name>.png`` (where the catalog saves them), the HTML embeds them
            as data URIs.
    """
    summary_rows = [(k, _fmt(v)) for k, v in test_summary.items() if k != "models"]
    model_rows = [(k, _fmt(v)) for k, v in model_desc.items()]
    model_rows += [(k, _fmt(model_meta[k])) for k in
                   ("best_epoch", "best_val_dice", "epochs_run", "stopped_early",
                    "resumed_from_epoch", "mlflow_run_id") if k in model_meta]
    reg_rows = [(k, _fmt(v)) for k, v in registration.items()]
    sections = [
        ("Model", model_rows),
        ("Test set (held out; never used for model selection)", summary_rows),
        ("Registry", reg_rows),
    ]
    tables = [(heading, frame) for heading, frame in (
        ("Model comparison (same data, folds and budget)", comparison_table(test_summary)),
        ("Training runs (selected on validation data only)", runs),
    ) if frame is not None and not frame.empty]
    return (_render_markdown(title, sections, tables, figures, per_image),
            _render_html(title, sections, tables, figures, per_image))


_Sections = list[tuple[str, list[tuple[str, str]]]]
_Tables = list[tuple[str, pd.DataFrame]]


def _render_markdown(title: str, sections: _Sections, tables: _Tables,
                     figures: Mapping[str, Any], per_image: pd.DataFrame) -> str:
    md = [f"# {title}", ""]
    for heading, rows in sections:
        md += [f"## {heading}", "", _table(rows), ""]
    for heading, frame in tables:
        md += [f"## {heading}", "", _markdown_table(frame), ""]
    md += ["## Figures", ""]
    md += [f"![{name}](figures/{name}.png)\n" for name in figures]
    md += ["## Per-image test metrics", "", _markdown_table(per_image), ""]
    return "\n".join(md)


def _render_html(title: str, sections: _Sections, tables: _Tables,
                 figures: Mapping[str, Any], per_image: pd.DataFrame) -> str:
    parts = [f"<h1>{html.escape(title)}</h1>"]
    for heading, rows in sections:
        cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                        for k, v in rows)
        parts.append(f"<h2>{html.escape(heading)}</h2><table>{cells}</table>")
    for heading, frame in tables:
        parts.append(f"<h2>{heading}</h2>")
        # The comparison table holds preformatted strings; the runs table raw numbers.
        parts.append(frame.to_html(index=False, float_format=lambda x: f"{x:.4f}"))
    parts.append("<h2>Figures</h2>")
    for name, fig in figures.items():
        data = base64.b64encode(figure_png(fig)).decode()
        parts.append(f'<figure><img alt="{html.escape(name)}" '
                     f'src="data:image/png;base64,{data}"><figcaption>{html.escape(name)}'
                     "</figcaption></figure>")
    parts.append("<h2>Per-image test metrics</h2>")
    parts.append(per_image.to_html(index=False, float_format=lambda x: f"{x:.4f}"))
    style = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;"
             "text-align:left}img{max-width:100%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{style}</style></head><body>{''.join(parts)}</body></html>")


def _markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (no optional dependency)."""
    def cell(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |",
             "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |"
              for row in frame.itertuples(index=False)]
    return "\n".join(lines)
