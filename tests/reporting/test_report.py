"""The report: figures drawn from their inputs, tables with intervals, words, provenance."""

import numpy as np
import pandas as pd

from sa2_pipeline.reporting.figures import (
    FN_COLOUR,
    FP_COLOUR,
    PRED_OUTLINE,
    TRUE_OUTLINE,
    error_map,
    pick_worst_and_best,
)
from sa2_pipeline.reporting.report import build_report, registry_sentence


def test_worst_and_best_are_listed_once_each():
    per_image = pd.DataFrame({"id": list("abcde"), "dice": [0.9, 0.1, 0.5, 0.7, np.nan]})
    assert pick_worst_and_best(per_image, 2, 1) == [
        ("b", "worst 1"),
        ("c", "worst 2"),
        ("a", "best 1"),
    ]
    assert [i for i, _ in pick_worst_and_best(per_image, 3, 3)] == ["b", "c", "d", "a"]


def test_error_map_colours_fp_fn_and_outlines():
    image = np.full((12, 12, 3), 128, np.uint8)
    truth = np.zeros((12, 12), np.uint8)
    truth[2:6, 2:6] = 1
    pred = np.zeros_like(truth)
    pred[7:11, 7:11] = 1
    out = error_map(image, truth, pred)
    # The interior of the missed object is tinted blue, of the spurious one red.
    assert out[3, 3, 2] > out[3, 3, 0] and np.all(out[3, 3] != 128)
    assert out[8, 8, 0] > out[8, 8, 2]
    assert tuple(out[2, 2]) == TRUE_OUTLINE and tuple(out[7, 7]) == PRED_OUTLINE
    assert FP_COLOUR != FN_COLOUR
    # Instance outlines: two true objects inside one mask region are outlined apart.
    instances = np.zeros_like(truth, dtype=np.int32)
    instances[2:6, 2:4], instances[2:6, 4:6] = 1, 2
    split = error_map(image, truth, truth, true_instances=instances)
    assert tuple(split[3, 4]) in (TRUE_OUTLINE, PRED_OUTLINE)
    assert tuple(error_map(image, truth, truth)[3, 4]) == (128, 128, 128)


def test_registry_decision_in_words(registration_record):
    text = registry_sentence(registration_record)
    assert "version 4 of sa2net-glas" in text and "did not become the champion" in text
    assert "stays version 2" in text and "decision_" not in text
    promoted = registry_sentence(
        {**registration_record, "decision_promote": True, "decision_reason": "no champion yet"}
    )
    assert "became the champion: no champion yet" in promoted
    assert "not registered: no active MLflow run" in registry_sentence(
        {"registered": False, "reason": "no active MLflow run"}
    )


def test_report_headline_comparison_published_and_provenance(make_report):
    (markdown, page), summary = make_report("glas")
    dice = summary["models"]["sa2net"]["intervals"]["dice"]
    cell = f"{dice['estimate']:.4f} [{dice['low']:.4f}, {dice['high']:.4f}]"
    assert cell in markdown and cell in page
    assert "| Dice |" in markdown and "| 6 |" in markdown  # n images behind the number
    assert "AJI" in page and "PQ" in page and "object F1" in page
    # SA2-Net is 0.1 better on every image: the paired verdict says so.
    assert "sa2net vs unet" in markdown and "better" in markdown
    assert "91.38" in page and "SA2-Net (published)" in page
    assert 'href="http://127.0.0.1:5000/#/experiments/0/runs/r1"' in page
    assert "deadbeef" in markdown
    assert "did not become the champion" in page
    assert page.count("data:image/png;base64,") == 3
    assert "![test_overlays](figures/test_overlays.png)" in markdown


def test_no_published_table_for_own_data(make_report):
    (markdown, _), _ = make_report("synthetic")
    assert "Published numbers" not in markdown


def test_empty_summary_still_renders():
    markdown, page = build_report(
        title="T",
        test_summary={"primary_model": "m"},
        per_image=pd.DataFrame({"id": [], "dice": []}),
        registration={},
        figures={},
    )
    assert "<h1>T</h1>" in page and markdown.startswith("# T")


def test_provenance_outside_git_and_dvc_falls_back(tmp_path):
    from sa2_pipeline.reporting.provenance import collect_provenance

    rows = collect_provenance(tmp_path, None, "abc123", "run-from-bundle")
    assert rows["dataset"] == "unknown" and rows["data_version"] is None
    assert rows["git_commit"] == "unknown" and rows["test_set_id"] == "abc123"
    assert rows["mlflow_run_id"] == "run-from-bundle"
    assert rows["mlflow_run_link"].endswith("/runs/run-from-bundle")


def test_per_class_rows_follow_the_headline_metrics():
    from sa2_pipeline.reporting.report import headline_table

    interval = {"estimate": 0.5, "low": 0.4, "high": 0.6, "n": 3}
    summary = {"primary_model": "m", "models": {"m": {"final_member": "fold0", "intervals": {
        "dice_class_2": interval, "dice": interval, "aji_class_1": interval, "aji": interval,
        "dice_class_1": interval, "dice_224": interval}}}}
    table = headline_table(summary)
    assert table["metric"].tolist() == ["Dice", "AJI", "Dice, class 1", "Dice, class 2",
                                        "AJI, class 1"]


def test_folds_table_gives_fold_mean_std_and_the_ensemble_per_model():
    from sa2_pipeline.reporting.report import folds_table

    entry = {"members": {"fold0": {}, "fold1": {}, "ensemble": {}},
             "fold_mean": {"dice": 0.9, "aji": 0.5}, "fold_std": {"dice": 0.01, "aji": 0.1},
             "final_member": "ensemble", "final": {"dice": 0.92, "aji": 0.6}}
    table = folds_table({"models": {"sa2net": entry}})
    row = table.iloc[0]
    assert (row["model"], row["folds"]) == ("sa2net", 2)
    assert row["dice (folds)"] == "0.9000 ± 0.0100" and row["dice (ensemble)"] == "0.9200"
    assert "aji (folds)" not in table.columns  # object metrics live in the headline table
