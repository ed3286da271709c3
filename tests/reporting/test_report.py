"""The report: figures drawn from their inputs, tables with intervals, words, provenance."""

import re

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from sa2_pipeline.reporting.figures import (
    FN_COLOUR,
    FP_COLOUR,
    PRED_OUTLINE,
    TRUE_OUTLINE,
    error_map,
    pick_worst_and_best,
    plot_learning_curves,
    plot_metric_distribution,
)
from sa2_pipeline.reporting.report import (
    FIGURE_CAPTIONS,
    build_report,
    comparison_sentences,
    folds_table,
    registry_sentence,
)


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


def _comparison(delta, low, high, p=0.01, n=8, higher_is_better=True):
    return {"n": n, "delta": delta, "delta_low": low, "delta_high": high,
            "delta_lower_bound": low, "wilcoxon_p": p, "higher_is_better": higher_is_better}


def test_summary_says_in_words_when_the_baseline_wins():
    """The baseline better on most paired metrics: the summary names it the winner, counts
    from the comparison (not hard-coded), and says whether the Dice difference is
    significant. The registry sentence alone ("became the champion") hid this."""
    worse = {m: _comparison(-0.02, -0.03, -0.01) for m in ("dice", "iou", "aji", "pq")}
    comparisons = {"unet": {**worse,
                            "boundary_f1": _comparison(0.001, -0.002, 0.004, p=0.5),
                            "hd95": _comparison(0.3, -0.1, 0.7, p=0.4, higher_is_better=False)}}
    summary = {"primary_model": "sa2net", "comparisons": comparisons}
    [text] = comparison_sentences(summary)
    assert "unet is better than sa2net on 5 of 6 paired metrics" in text
    assert "clearly (95 % interval of the difference excluding 0) on 4" in text
    # The difference is stated winner − loser, its interval flipped with it.
    assert "Dice, unet − sa2net: +0.0200 [95 % CI +0.0100, +0.0300]" in text
    assert "the difference in Dice is significant" in text
    # An interval that straddles 0 is not significant; the primary model leads here.
    comparisons["unet"]["dice"] = _comparison(0.004, -0.001, 0.009, p=0.2)
    for m in ("iou", "aji", "pq"):
        comparisons["unet"][m] = _comparison(0.01, 0.002, 0.02)
    [text] = comparison_sentences(summary)
    assert "sa2net is better than unet on 5 of 6 paired metrics" in text
    assert "clearly (95 % interval of the difference excluding 0) on 3" in text
    assert "Dice, sa2net − unet: +0.0040 [95 % CI -0.0010, +0.0090]" in text
    assert "the difference in Dice is not significant" in text
    # Even, and an interval that could not be computed: said, never printed as nan.
    comparisons = {"unet": {"dice": _comparison(0.01, float("nan"), float("nan"), p=1.0, n=1),
                            "iou": _comparison(-0.01, float("nan"), float("nan"), n=1)}}
    [text] = comparison_sentences({"primary_model": "sa2net", "comparisons": comparisons})
    assert "sa2net and unet are even: each is better on 1 of 2 paired metrics" in text
    assert "[95 % CI –, –]" in text and "nan" not in text
    assert "too few images to tell whether the difference in Dice is significant" in text


def test_the_report_summary_carries_the_paired_verdict(make_report):
    (markdown, page), summary = make_report("glas")
    summary_md = markdown.split("## Summary", 1)[1].split("## Registry decision", 1)[0]
    n = len(summary["comparisons"]["unet"])
    # In the fixture SA2-Net is 0.1 better on every image (HD95 0.1 × 10 lower).
    assert f"sa2net is better than unet on {n} of {n} paired metrics" in summary_md
    assert "the difference in Dice is significant" in summary_md
    assert "Dice, sa2net − unet: +0.1000" in summary_md
    assert "<p class=\"lead\">Paired on the same 6 test images, sa2net is better" in page


def test_one_fold_prints_no_standard_deviation():
    entry = {"members": {"fold0": {}}, "fold_mean": {"dice": 0.9527, "iou": 0.91},
             "fold_std": {"dice": 0.0, "iou": 0.0}, "final_member": "fold0",
             "final": {"dice": 0.9527, "iou": 0.91}}
    row = folds_table({"models": {"sa2net": entry}}).iloc[0]
    assert row["folds"] == 1
    assert row["dice (folds)"] == "0.9527 (1 fold)" and "±" not in row["iou (folds)"]


def test_counts_print_as_integers(make_report):
    markdown, page = build_report(
        title="T",
        test_summary={"primary_model": "m"},
        per_image=pd.DataFrame({"id": ["a", "b"], "dice": [0.5, 1.0],
                                "n_true_objects": [141.0, np.nan],
                                "n_pred_objects": [147.0, 0.0]}),
        registration={},
        figures={},
    )
    assert "| a | 0.5000 | 141 | 147 |" in markdown and "| b | 1.0000 | – | 0 |" in markdown
    assert "141.0" not in markdown and "141.0" not in page and "<td>147</td>" in page
    # The fixture's report: object counts and "n images" are integers too.
    (markdown, page), _ = make_report("glas")
    assert "9.0000" not in markdown and "9.0000" not in page and "| 9 |" in markdown


def test_wide_tables_scroll_inside_the_page(make_report):
    (_, page), _ = make_report("glas")
    style = re.search(r"<style>(.*?)</style>", page).group(1)
    assert re.search(r"\.table-wrap\{[^}]*max-width:100%[^}]*overflow-x:auto", style)
    per_image = page.split("Per-image test scores (primary model)</h2>", 1)[1]
    assert per_image.startswith('<div class="table-wrap"><table')
    # Every table is in a scrolling container.
    assert page.count("<table") == page.count('<div class="table-wrap"><table')


def test_loss_panels_have_legends_and_say_losses_are_not_comparable():
    runs = []
    for model, scale in (("sa2net", 2.0), ("unet", 0.3)):
        frame = pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [1.0, 0.8, 0.7],
                              "val_dice": [0.5, 0.7, 0.6], "is_best": [True, True, False],
                              "model": model, "fold": 0})
        runs.append(frame.assign(train_loss=frame["train_loss"] * scale))
    fig = plot_learning_curves(pd.concat(runs, ignore_index=True))
    loss_axes = [ax for ax in fig.axes if "training loss" in ax.get_ylabel()]
    assert len(loss_axes) == 2  # one panel (own y scale) per model
    for ax, model in zip(loss_axes, ("sa2net", "unet"), strict=True):
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert labels == [f"{model} fold 0 (train)"]
    [dice_ax] = [ax for ax in fig.axes if "validation Dice" in ax.get_ylabel()]
    labels = [t.get_text() for t in dice_ax.get_legend().get_texts()]
    assert labels == ["sa2net fold 0 (val)", "unet fold 0 (val)"]
    assert "not comparable across models" in fig._suptitle.get_text()
    plt.close(fig)
    assert "not comparable across models" in FIGURE_CAPTIONS["learning_curves"]


def test_box_plot_axis_follows_the_data():
    per_image = pd.DataFrame({"id": list("abcd"), "dice": [0.93, 0.95, 0.96, 0.97],
                              "iou": [0.87, 0.9, 0.92, 0.94]})
    fig = plot_metric_distribution(per_image)
    low, high = fig.axes[0].get_ylim()
    plt.close(fig)
    assert 0.8 < low < 0.87 and 0.97 < high < 1.0
