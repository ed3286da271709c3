"""Figures are drawn from their inputs and the report embeds them."""

import numpy as np
import pandas as pd

from sa2_pipeline.reporting.figures import pick_overlay_ids, plot_learning_curves, plot_overlays
from sa2_pipeline.reporting.report import build_report, figure_png


def _history():
    return pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [1.0, 0.8, 0.7],
                         "val_dice": [0.5, 0.7, 0.6], "val_iou": [0.4, 0.6, 0.5],
                         "lr": [1e-3, 9e-4, 7e-4], "is_best": [True, True, False]})


def test_overlay_selection_spans_worst_to_best():
    per_image = pd.DataFrame({"id": list("abcde"), "dice": [0.9, 0.1, 0.5, 0.7, 0.3]})
    assert pick_overlay_ids(per_image, 3) == ["b", "c", "a"]
    assert pick_overlay_ids(per_image, 10) == ["b", "e", "c", "d", "a"]


def test_report_embeds_figures_and_tables():
    per_image = pd.DataFrame({"id": ["x", "y"], "dice": [0.8, 0.6], "iou": [0.7, 0.5]})
    images = {i: np.full((16, 16, 3), 200, np.uint8) for i in ("x", "y")}
    masks = {i: np.pad(np.ones((8, 8), np.uint8), 4) for i in ("x", "y")}
    overlays = plot_overlays(images, masks, masks, per_image, n=2)
    curves = figure_png(plot_learning_curves(_history()))
    markdown, html = build_report(
        title="T", model_meta={"best_epoch": 2}, model_desc={"model": "sa2net"},
        test_summary={"test_dice": 0.7}, per_image=per_image,
        registration={"version": "3"}, figures={"learning_curves": curves, "overlays": overlays})
    assert "![learning_curves](figures/learning_curves.png)" in markdown
    assert "| test_dice | 0.7000 |" in markdown
    assert html.count("data:image/png;base64,") == 2
    assert "<td>3</td>" in html and "best_epoch" in html
