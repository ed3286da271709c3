"""The run report, Markdown (figures beside it) and self-contained HTML (figures embedded).

Read top to bottom it answers: how good is the model (headline table with 95 % intervals
and the number of test images behind each number), is it better than the baselines (paired
differences on the same images), how does it compare with the paper, where does it fail
(worst and best images), did it train sensibly, what did the registry do and why, and where
the numbers come from (provenance).
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from collections.abc import Mapping
from typing import Any

import pandas as pd

#: Headline metrics, in display order, with their names in the report.
HEADLINE = {
    "dice": "Dice",
    "iou": "IoU",
    "aji": "AJI",
    "pq": "PQ",
    "dq": "DQ",
    "sq": "SQ",
    "obj_precision": "object precision",
    "obj_recall": "object recall",
    "obj_f1": "object F1 (IoU > 0.5)",
    "boundary_f1": "boundary F1",
    "hd95": "HD95 (px, lower is better)",
}

FIGURE_CAPTIONS = {
    "test_overlays": "Worst and best test images (primary model). Red: false positive, blue: "
    "false negative, orange: wrong class; green: true object outlines, yellow: predicted "
    "object outlines.",
    "metric_distribution": "Per-image test scores of each model's final member (box: "
    "quartiles, triangle: mean, dots: images).",
    "learning_curves": "Training loss and validation Dice per epoch (star: selected epoch). "
    "Each model's training loss has its own panel and scale: it is the loss that model was "
    "trained with, so losses are not comparable across models; validation Dice is.",
}


def figure_png(fig: Any) -> bytes:
    """PNG bytes of a figure (already-rendered PNG bytes pass through)."""
    if isinstance(fig, bytes | bytearray):
        return bytes(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def _num(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


#: Columns that hold counts (printed as integers when every value is a whole number).
_COUNT_COLUMNS = ("n", "n images", "folds", "best_epoch", "epochs_run", "resumed_from_epoch")


def _is_count_column(name: Any) -> bool:
    name = str(name)
    return name.startswith(("n_", "n ")) or name in _COUNT_COLUMNS


def _counts_as_integers(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its count columns (``n_true_objects``, ``n images``, ``folds``...)
    as integer text (``141``, not ``141.0000``); missing values as ``–``. A column with a
    fractional value is left as it is."""
    out = frame.copy()
    for column in out.columns:
        if not _is_count_column(column) or not pd.api.types.is_numeric_dtype(out[column]):
            continue
        values = pd.to_numeric(out[column], errors="coerce").astype(float)
        present = values.dropna()
        if (present != present.round()).any():
            continue
        out[column] = ["–" if math.isnan(v) else str(int(v)) for v in values]
    return out


def _ci(entry: Mapping[str, Any]) -> str:
    low, high = entry.get("low"), entry.get("high")
    if low is None or (isinstance(low, float) and math.isnan(low)):
        return _num(entry.get("estimate"))
    return f"{_num(entry['estimate'])} [{_num(low)}, {_num(high)}]"


def _ordered_metrics(available: list[str]) -> list[str]:
    """Headline metrics in display order, then their per-class values (multi-class)."""
    per_class = sorted(
        (m for m in available if "_class_" in m and m.split("_class_")[0] in HEADLINE),
        key=lambda m: (list(HEADLINE).index(m.split("_class_")[0]), m),
    )
    return [m for m in HEADLINE if m in available] + per_class


def _label(metric: str) -> str:
    base, _, cls = metric.partition("_class_")
    return f"{HEADLINE[base]}, class {cls}" if cls else HEADLINE[metric]


def folds_table(test_summary: Mapping[str, Any]) -> pd.DataFrame:
    """One row per model: Dice/IoU as fold mean ± std and of the final member (ensemble)."""
    rows = []
    for name, entry in test_summary.get("models", {}).items():
        if not {"members", "fold_mean", "fold_std", "final"} <= set(entry):
            continue
        folds = len(entry["members"]) - (1 if "ensemble" in entry["members"] else 0)
        row: dict[str, Any] = {"model": name, "folds": folds}
        pixel = [m for m in entry["fold_mean"] if m.startswith(("dice", "iou"))]
        for metric in pixel:
            # One fold has no spread: say so instead of printing a std of 0.
            spread = ("(1 fold)" if folds == 1 else f"± {entry['fold_std'][metric]:.4f}")
            row[f"{metric} (folds)"] = f"{entry['fold_mean'][metric]:.4f} {spread}"
        for metric in pixel:
            row[f"{metric} ({entry['final_member']})"] = f"{entry['final'][metric]:.4f}"
        rows.append(row)
    return pd.DataFrame(rows)


def headline_table(test_summary: Mapping[str, Any]) -> pd.DataFrame:
    """Rows: headline metrics; columns: each model's mean [95 % interval], and n images."""
    models = test_summary.get("models", {})
    primary = test_summary.get("primary_model")
    names = [primary, *[m for m in models if m != primary]] if primary in models else list(models)
    if not names or "intervals" not in models[names[0]]:
        return pd.DataFrame()
    rows = []
    for metric in _ordered_metrics(list(models[names[0]]["intervals"])):
        row: dict[str, Any] = {"metric": _label(metric)}
        for name in names:
            entry = models[name].get("intervals", {}).get(metric)
            row[f"{name} ({models[name]['final_member']})"] = _ci(entry) if entry else "–"
        row["n images"] = models[names[0]]["intervals"][metric]["n"]
        rows.append(row)
    return pd.DataFrame(rows)


def _verdict(entry: Mapping[str, Any]) -> str:
    low, high = entry["delta_low"], entry["delta_high"]
    if math.isnan(low):
        return "too few images to tell"
    better = low > 0 if entry["higher_is_better"] else high < 0
    worse = high < 0 if entry["higher_is_better"] else low > 0
    return "better" if better else "worse" if worse else "no clear difference"


def _favours(entry: Mapping[str, Any]) -> int:
    """+1 when the primary model's mean is the better one, -1 the baseline's, 0 neither."""
    delta = entry.get("delta")
    if delta is None or not math.isfinite(delta) or delta == 0:
        return 0
    sign = 1 if delta > 0 else -1
    return sign if entry.get("higher_is_better", True) else -sign


def _short_label(metric: str) -> str:
    return _label(metric).split(" (")[0]


#: The metric whose paired difference the summary states (the promotion metric), when the
#: comparison has it; else the first compared metric in display order.
KEY_METRIC = "dice"


def _signed(value: Any) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:+.4f}"


def comparison_sentence(primary: str, baseline: str, metrics: Mapping[str, Any]) -> str:
    """The paired comparison with one baseline in words, from the same numbers as its table.

    Says which model is better on how many of the compared metrics (by the mean paired
    difference), on how many clearly (the 95 % interval of the difference excludes 0: the
    table's verdict), and the difference in the key metric (Dice) with its interval and
    whether it is significant (the same rule). Differences are given as winner − loser.
    """
    names = _ordered_metrics(list(metrics))
    if not names:
        return f"{primary} and {baseline} share no compared metric."
    votes = [_favours(metrics[m]) for m in names]
    primary_wins, baseline_wins = votes.count(1), votes.count(-1)
    verdicts = [_verdict(metrics[m]) for m in names]
    key = KEY_METRIC if KEY_METRIC in names else names[0]
    entry, label = metrics[key], _short_label(key)
    opening = f"Paired on the same {entry['n']} test images, "
    if primary_wins == baseline_wins:
        text = (f"{opening}{primary} and {baseline} are even: each is better on "
                f"{primary_wins} of {len(names)} paired metrics (mean difference).")
        leader, other, sign = primary, baseline, 1
    else:
        baseline_leads = baseline_wins > primary_wins
        leader, other = (baseline, primary) if baseline_leads else (primary, baseline)
        sign, clear = (-1, "worse") if baseline_leads else (1, "better")
        text = (f"{opening}{leader} is better than {other} on "
                f"{max(primary_wins, baseline_wins)} of {len(names)} paired metrics (mean "
                "difference), clearly (95 % interval of the difference excluding 0) on "
                f"{verdicts.count(clear)}.")
    # The key metric's difference as leader − other: flip the sign and the interval.
    low, high = sign * entry["delta_low"], sign * entry["delta_high"]
    low, high = min(low, high), max(low, high)
    text += (f" {label}, {leader} − {other}: {_signed(sign * entry['delta'])} [95 % CI "
             f"{_signed(low)}, {_signed(high)}], Wilcoxon p = {_num(entry['wilcoxon_p'], 3)}: ")
    verdict = _verdict(entry)
    if verdict == "too few images to tell":
        return text + f"too few images to tell whether the difference in {label} is significant."
    significant = "is" if verdict in ("better", "worse") else "is not"
    return text + f"the difference in {label} {significant} significant."


def comparison_sentences(test_summary: Mapping[str, Any]) -> list[str]:
    """:func:`comparison_sentence` for each baseline the primary model was compared with."""
    primary = test_summary.get("primary_model", "model")
    return [
        comparison_sentence(primary, baseline, metrics)
        for baseline, metrics in test_summary.get("comparisons", {}).items()
        if metrics
    ]


def comparison_tables(test_summary: Mapping[str, Any]) -> dict[str, pd.DataFrame]:
    """One table per baseline: Δ (primary − baseline), interval, lower bound, Wilcoxon p."""
    tables = {}
    for baseline, metrics in test_summary.get("comparisons", {}).items():
        rows = [
            {
                "metric": _label(m),
                "Δ": _num(metrics[m]["delta"]),
                "95 % interval": f"[{_num(metrics[m]['delta_low'])}, "
                f"{_num(metrics[m]['delta_high'])}]",
                "one-sided 95 % lower bound": _num(metrics[m]["delta_lower_bound"]),
                "Wilcoxon p": _num(metrics[m]["wilcoxon_p"], 3),
                "n images": metrics[m]["n"],
                "verdict": _verdict(metrics[m]),
            }
            for m in _ordered_metrics(list(metrics))
        ]
        tables[baseline] = pd.DataFrame(rows)
    return tables


def published_table(published: Mapping[str, Any] | None, test_summary: Mapping[str, Any]):
    """Published Dice/IoU (%) beside ours, or ``None`` when the dataset has no entry."""
    if not published:
        return None

    def pct(pair, k):
        return "not published" if pair is None or pair[k] is None else f"{pair[k]:.2f}"

    rows = [
        {
            "model": "SA2-Net (published)",
            "Dice %": pct(published.get("sa2net"), 0),
            "IoU %": pct(published.get("sa2net"), 1),
        }
    ]
    rows += [
        {"model": f"{name} (published)", "Dice %": pct(pair, 0), "IoU %": pct(pair, 1)}
        for name, pair in published.get("baselines", {}).items()
    ]
    for name, entry in test_summary.get("models", {}).items():
        final = entry.get("final", {})
        for suffix, label in (("_224", " at 224², as published"), ("", " native")):
            if f"dice{suffix}" in final:
                rows.append(
                    {
                        "model": f"{name} (this run{label})",
                        "Dice %": f"{100 * final[f'dice{suffix}']:.2f}",
                        "IoU %": f"{100 * final.get(f'iou{suffix}', float('nan')):.2f}",
                    }
                )
    return pd.DataFrame(rows)


def registry_sentence(record: Mapping[str, Any]) -> str:
    """The registry decision in plain words."""
    if not record.get("registered", True) or "version" not in record:
        return f"The model was not registered: {record.get('reason', 'no reason recorded')}."
    name, version = record.get("model_name", "the model"), record["version"]
    metric = record.get("decision_metric", "the promotion metric")
    candidate, champion = (
        record.get("decision_candidate_score"),
        record.get("decision_champion_score"),
    )
    reason = record.get("decision_reason", "")
    if record.get("unchanged"):
        champion_now = record.get("decision_champion_version")
        if champion_now is None:
            whose = f"No version of {name} is champion."
        elif str(champion_now) == str(version):
            whose = f"Version {version} is the champion."
        else:
            whose = f"The champion is version {champion_now}."
        return (
            f"Nothing new was registered: this model is identical (same weights, same test "
            f"set) to version {version} of {name}, already registered. {whose}"
        )
    text = f"Registered as version {version} of {name} (alias challenger). "
    if record.get("decision_promote"):
        text += f"It became the champion: {reason}."
    else:
        text += (
            f"It did not become the champion: {reason}. The champion stays version "
            f"{record.get('decision_champion_version')}"
        )
        if champion is not None and candidate is not None:
            text += f" ({metric} {champion:.4f} against this model's {candidate:.4f})"
        text += "."
    return text.replace("..", ".")


def _or_na(value: Any, fmt: str = "+.4f") -> str:
    return "n/a" if value is None else format(float(value), fmt)


def retraining_items(record: Mapping[str, Any]) -> list[str]:
    """The retraining record (``sa2-pipeline retrain``) as the report's bullet points:
    what was new, the data version, what trained, the gate's figures and the decision."""
    changes = record.get("changes") or {}
    gate = record.get("gate") or {}
    reg = record.get("registration") or {}
    data = record.get("data") or {}
    named = (changes.get("new", []) + changes.get("changed", []))[:12]
    items = [
        f"dataset: `{record.get('dataset')}`, started {record.get('started')}, "
        f"finished {record.get('finished')}",
        f"new images: {len(changes.get('new', []))}, changed: "
        f"{len(changes.get('changed', []))}, removed: {len(changes.get('removed', []))}"
        f" ({', '.join(named)})",
        f"data version: `{data.get('data_version')}` (DVC pushed: {data.get('pushed')})",
        f"trained: `{reg.get('model_name')}` version {reg.get('version')}"
        f" (run `{reg.get('run_id')}`), test Dice {_or_na(record.get('test_dice'), '.4f')}",
    ]
    if gate.get("delta") is not None:
        level = f"{100 * float(gate.get('confidence', 0.95)):g}%"
        items.append(
            f"challenger - champion, per-image Dice on the frozen test set (n = "
            f"{gate.get('n')}): {_or_na(gate.get('delta'))}, {level} interval "
            f"[{_or_na(gate.get('delta_low'))}, {_or_na(gate.get('delta_high'))}], one-sided "
            f"lower bound {_or_na(gate.get('lower_bound'))} (margin {gate.get('margin')}), "
            f"Wilcoxon p = {_or_na(gate.get('wilcoxon_p'), '.3g')}")
    items.append(f"decision: **{record.get('decision')}**: {record.get('reason')}")
    return items


def headline_sentence(test_summary: Mapping[str, Any], dataset: str) -> str:
    """One sentence: the primary model's main scores with intervals and the test set size."""
    primary = test_summary.get("primary_model", "model")
    intervals = test_summary.get("models", {}).get(primary, {}).get("intervals", {})
    parts = [
        f"{HEADLINE[m].split(' (')[0]} {_ci(intervals[m])}"
        for m in ("dice", "aji", "pq", "obj_f1")
        if m in intervals
    ]
    n = test_summary.get("n_images", "?")
    return (
        f"{primary} on {dataset}: "
        + ", ".join(parts)
        + f" (mean [95 % bootstrap interval] over {n} held-out test images, never used "
        "for model selection)."
    )


_URL = re.compile(r"(https?://[^<\s]+)")


def _html_table(frame: pd.DataFrame) -> str:
    """The table in a container that scrolls sideways, so a wide table (the per-image
    scores) never makes the page wider than the text column."""
    table = _counts_as_integers(frame).to_html(
        index=False, escape=True, na_rep="–", float_format=lambda x: f"{x:.4f}"
    )
    linked = _URL.sub(r'<a href="\1">\1</a>', table)
    return f'<div class="table-wrap">{linked}</div>'


def _kv_rows(rows: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["", " "])


def _provenance_rows(provenance: Mapping[str, Any]) -> list[tuple[str, str]]:
    labels = {
        "dataset": "dataset",
        "data_version": "data version",
        "test_set_id": "test set id (hash of the test images and masks)",
        "git_commit": "git commit",
        "mlflow_run_id": "MLflow run",
        "mlflow_run_link": "MLflow run link",
        "tracking_uri": "MLflow tracking store",
    }
    return [
        (label, _num(provenance.get(key, "unknown")) if provenance.get(key) else "unknown")
        for key, label in labels.items()
    ]


def build_sections(
    *,
    dataset: str,
    model_desc: Mapping[str, Any],
    test_summary: Mapping[str, Any],
    per_image: pd.DataFrame,
    registration: Mapping[str, Any],
    runs: pd.DataFrame | None,
    provenance: Mapping[str, Any],
    published: Mapping[str, Any] | None,
    retraining: Mapping[str, Any] | None = None,
) -> list[tuple[str, str | list[str] | pd.DataFrame]]:
    """The report's sections in order: ``(heading, paragraph, bullet list or table)``;
    ``"figures"`` marks where the figures go."""
    sections: list[tuple[str, str | list[str] | pd.DataFrame]] = [
        # Paragraphs: the headline scores, then the verdict of each paired comparison.
        (
            "Summary",
            "\n\n".join(
                [headline_sentence(test_summary, dataset), *comparison_sentences(test_summary)]
            ),
        ),
        ("Registry decision", registry_sentence(registration)),
    ]
    if retraining:
        sections.append(("Retraining", retraining_items(retraining)))
    headline = headline_table(test_summary)
    if not headline.empty:
        sections.append(("Test scores (95 % bootstrap intervals of the mean)", headline))
    folds = folds_table(test_summary)
    if not folds.empty:
        sections.append(("Model comparison (same data, folds and budget)", folds))
    for baseline, table in comparison_tables(test_summary).items():
        sections.append(
            (
                f"{test_summary['primary_model']} vs {baseline} (paired, same images; "
                "Δ = primary − baseline)",
                table,
            )
        )
    table = published_table(published, test_summary)
    if table is not None:
        note = (published or {}).get("source", "")
        sections.append((f"Published numbers on {dataset} ({note}; see docs/protocol.md)", table))
    sections.append(("figures", ""))
    sections.append(("Model", _kv_rows([(k, _num(v)) for k, v in model_desc.items()])))
    if runs is not None and not runs.empty:
        sections.append(("Training runs (selected on validation data only)", runs))
    sections.append(("Provenance", _kv_rows(_provenance_rows(provenance))))
    sections.append(("Per-image test scores (primary model)", per_image))
    return sections


def _markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (no optional dependency)."""
    frame = _counts_as_integers(frame)
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += [
        "| " + " | ".join(_num(v) for v in row) + " |" for row in frame.itertuples(index=False)
    ]
    return "\n".join(lines)


def _render_markdown(title: str, sections, figures: Mapping[str, Any]) -> str:
    md = [f"# {title}", ""]
    for heading, body in sections:
        if heading == "figures":
            for name in figures:
                md += [f"![{name}](figures/{name}.png)", "", FIGURE_CAPTIONS.get(name, name), ""]
            continue
        if isinstance(body, list):
            text = "\n".join(f"- {item}" for item in body)
        else:
            text = body if isinstance(body, str) else _markdown_table(body)
        md += [f"## {heading}", "", text, ""]
    return "\n".join(md)


_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
    ".table-wrap{max-width:100%;overflow-x:auto;margin:.5em 0 1.5em}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;"
    "padding:3px 8px;text-align:left;font-size:.9em}img{max-width:100%}"
    "figure{margin:1em 0}figcaption{font-size:.9em;color:#555}p.lead{font-size:1.1em}"
)


def _inline_html(text: str) -> str:
    """Escaped text with Markdown's ``code`` and **bold** as HTML."""
    import re

    out = html.escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)


def _render_html(title: str, sections, figures: Mapping[str, Any]) -> str:
    parts = [f"<h1>{html.escape(title)}</h1>"]
    for heading, body in sections:
        if heading == "figures":
            parts.append("<h2>Figures</h2>")
            for name, fig in figures.items():
                data = base64.b64encode(figure_png(fig)).decode()
                parts.append(
                    f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{data}">'
                    f"<figcaption>{html.escape(FIGURE_CAPTIONS.get(name, name))}</figcaption>"
                    "</figure>"
                )
            continue
        if isinstance(body, list):
            content = "<ul>" + "".join(f"<li>{_inline_html(item)}</li>" for item in body) + "</ul>"
        elif isinstance(body, str):
            content = "".join(f'<p class="lead">{html.escape(p)}</p>' for p in body.split("\n\n"))
        else:
            content = _html_table(body)
        parts.append(f"<h2>{html.escape(heading)}</h2>{content}")
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
        f"</title><style>{_STYLE}</style></head><body>{''.join(parts)}</body></html>"
    )


def primary_bundle(
    trained_models: Mapping[str, Mapping[str, Any]], primary: str
) -> Mapping[str, Any]:
    """The first (in key order) trained bundle of the primary model."""
    return next(b for _, b in sorted(trained_models.items()) if b["model_name"] == primary)


def model_description(bundle: Mapping[str, Any]) -> dict[str, Any]:
    """The report's "Model" rows: name, constructor arguments, input order, resize size."""
    return {
        "model": bundle["model_name"],
        **bundle["init_kwargs"],
        "input": bundle.get("input_convention", {}).get("channel_order", "rgb"),
        "resize_to": bundle.get("resize_to"),
    }


def runs_table(trained_models: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """One row per trained (model, fold) bundle: best epoch, validation Dice, resume..."""
    keys = ("best_epoch", "best_val_dice", "epochs_run", "stopped_early", "resumed_from_epoch")
    return pd.DataFrame(
        [
            {"run": key, **{k: b["metadata"].get(k) for k in keys}}
            for key, b in sorted(trained_models.items())
        ]
    )


def build_report(
    *,
    title: str,
    test_summary: Mapping[str, Any],
    per_image: pd.DataFrame,
    registration: Mapping[str, Any],
    figures: Mapping[str, Any],
    model_desc: Mapping[str, Any] | None = None,
    runs: pd.DataFrame | None = None,
    dataset: str = "",
    provenance: Mapping[str, Any] | None = None,
    published: Mapping[str, Any] | None = None,
    retraining: Mapping[str, Any] | None = None,
) -> tuple[str, str]:
    """Return ``(markdown, html)``.

    Args:
        figures: ``{name: Figure or PNG bytes}``; the Markdown links ``figures/<name>.png``
            (where the catalog saves them), the HTML embeds them as data URIs.
        runs: One row per trained (model, fold): best epoch, validation Dice...
        provenance: ``dataset``, ``data_version``, ``test_set_id``, ``git_commit``,
            ``mlflow_run_id``, ``mlflow_run_link``, ``tracking_uri`` (any may be missing).
        published: The dataset's entry of :mod:`sa2_pipeline.reporting.published`.
        retraining: The retraining record of the retrain that trained this model (its
            ``Retraining`` section); ``None`` for a run that was not a retrain.
    """
    sections = build_sections(
        dataset=dataset,
        model_desc=model_desc or {},
        test_summary=test_summary,
        per_image=per_image,
        registration=registration,
        runs=runs,
        provenance=provenance or {},
        published=published,
        retraining=retraining,
    )
    return _render_markdown(title, sections, figures), _render_html(title, sections, figures)


__all__ = [
    "build_report",
    "comparison_sentence",
    "comparison_sentences",
    "figure_png",
    "headline_table",
    "model_description",
    "primary_bundle",
    "registry_sentence",
    "retraining_items",
    "runs_table",
]
