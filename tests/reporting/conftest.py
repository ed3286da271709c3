"""Shared inputs of the report tests: a two-model evaluation and its rendered report."""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from sa2_pipeline.metrics.comparison import add_uncertainty
from sa2_pipeline.reporting.figures import (
    plot_error_maps,
    plot_learning_curves,
    plot_metric_distribution,
)
from sa2_pipeline.reporting.published import published_for
from sa2_pipeline.reporting.report import build_report, figure_png


def history():
    return pd.DataFrame(
        {
            "epoch": [1, 2, 3],
            "train_loss": [1.0, 0.8, 0.7],
            "val_dice": [0.5, 0.7, 0.6],
            "val_iou": [0.4, 0.6, 0.5],
            "lr": [1e-3, 9e-4, 7e-4],
            "is_best": [True, True, False],
        }
    )


def _scene():
    """Per-image table of two models on 6 images and the evaluation summary around it."""
    rng = np.random.default_rng(0)
    ids = [f"img{i}" for i in range(6)]
    base = rng.uniform(0.6, 0.8, 6)
    rows = []
    for model, shift in (("sa2net", 0.1), ("unet", 0.0)):
        rows += [
            {
                "model": model,
                "member": "fold0",
                "id": i,
                "dice": d + shift,
                "iou": (d + shift) * 0.8,
                "aji": d + shift - 0.2,
                "pq": d + shift - 0.25,
                "obj_f1": d + shift - 0.1,
                "hd95": 5 - 10 * shift,
                "n_true_objects": 9.0,
            }
            for i, d in zip(ids, base, strict=True)
        ]
    per_image = pd.DataFrame(rows)
    summary = {
        "primary_model": "sa2net",
        "n_images": 6,
        "test_set_id": "abc123",
        "models": {
            m: {
                "final_member": "fold0",
                "final": {"dice": float(per_image[per_image.model == m].dice.mean()), "iou": 0.5},
            }
            for m in ("sa2net", "unet")
        },
    }
    add_uncertainty(summary, per_image, n_resamples=999)
    return per_image, summary


REGISTERED = {
    "model_name": "sa2net-glas",
    "version": "4",
    "unchanged": False,
    "decision_promote": False,
    "decision_reason": "test_dice 0.7100 is not above the champion's 0.7300 by more than 0.0",
    "decision_metric": "test_dice",
    "decision_candidate_score": 0.71,
    "decision_champion_score": 0.73,
    "decision_champion_version": "2",
}


def render_report(dataset="glas"):
    per_image, summary = _scene()
    primary = per_image[per_image.model == "sa2net"].drop(columns=["model", "member"])
    images = {i: np.full((16, 16, 3), 200, np.uint8) for i in primary["id"]}
    masks = {i: np.pad(np.ones((8, 8), np.uint8), 4) for i in primary["id"]}
    figures = {
        "test_overlays": plot_error_maps(images, masks, masks, primary, 2, 2),
        "metric_distribution": plot_metric_distribution(per_image),
        "learning_curves": figure_png(plot_learning_curves(history())),
    }
    report = build_report(
        title="T",
        dataset=dataset,
        model_desc={"model": "sa2net"},
        test_summary=summary,
        per_image=primary,
        registration=REGISTERED,
        figures=figures,
        provenance={
            "dataset": dataset,
            "git_commit": "deadbeef",
            "mlflow_run_id": "r1",
            "mlflow_run_link": "http://127.0.0.1:5000/#/experiments/0/runs/r1",
        },
        published=published_for(dataset),
    )
    for figure in figures.values():
        if not isinstance(figure, bytes):
            plt.close(figure)
    return report, summary


@pytest.fixture
def make_report():
    """``make_report(dataset) -> ((markdown, html), summary)``."""
    return render_report


@pytest.fixture
def registration_record():
    """A registered version that did not beat the champion."""
    return dict(REGISTERED)
