"""dvc.yaml declares the summary as metrics and the history / per-image scores as plots, so
`dvc metrics diff` and `dvc plots diff` compare two commits (here in a scratch git repo)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sa2_pipeline.metrics.comparison import add_uncertainty
from sa2_pipeline.metrics.summary import headline_metrics, summarise_test_set

REPO_ROOT = Path(__file__).resolve().parents[1]
DVC = [sys.executable, "-m", "dvc"]


def _run(cwd: Path, *args: str) -> str:
    result = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{args}: {result.stderr}"
    return result.stdout


def _write_outputs(root: Path, shift: float) -> None:
    rng = np.random.default_rng(0)
    dice = rng.uniform(0.6, 0.8, 5) + shift
    per_image = pd.DataFrame(
        {"model": "sa2net", "member": "fold0", "id": [f"img{i}" for i in range(5)], "dice": dice}
    )
    summary = add_uncertainty(summarise_test_set(per_image, "sa2net"), per_image, n_resamples=199)
    reporting = root / "data" / "08_reporting" / "synthetic"
    reporting.mkdir(parents=True, exist_ok=True)
    (reporting / "test_summary.json").write_text(json.dumps(summary))
    (reporting / "metrics.json").write_text(json.dumps(headline_metrics(summary)))
    per_image.to_csv(reporting / "test_metrics_per_image.csv", index=False)
    models = root / "data" / "06_models" / "synthetic"
    models.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        {
            "model": "sa2net",
            "fold": 0,
            "epoch": [1, 2, 3],
            "val_dice": np.array([0.4, 0.5, 0.6]) + shift,
        }
    ).to_csv(models / "training_history.csv", index=False)


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_metrics_and_plots_compare_two_commits(tmp_path):
    for name in ("dvc.yaml", "dvc_datasets.yaml"):
        shutil.copy(REPO_ROOT / name, tmp_path / name)
    _run(tmp_path, "git", "init", "-q")
    _run(tmp_path, "git", "config", "user.email", "ci@example.org")
    _run(tmp_path, "git", "config", "user.name", "ci")
    _run(tmp_path, *DVC, "init", "-q")
    _write_outputs(tmp_path, 0.0)
    _run(tmp_path, "git", "add", "-A")
    _run(tmp_path, "git", "commit", "-qm", "first run")
    _write_outputs(tmp_path, 0.1)
    _run(tmp_path, "git", "commit", "-qam", "second run")

    # What a terminal shows: a few named headline numbers, not one line of 380 columns
    table = _run(tmp_path, *DVC, "metrics", "show")
    assert max(len(line) for line in table.splitlines()) <= 120, table
    assert "dice_ci_low" in table and "n_images" in table, table
    shown = json.loads(_run(tmp_path, *DVC, "metrics", "show", "--json"))
    headline = shown[""]["data"]["data/08_reporting/synthetic/metrics.json"]["data"]
    assert headline["n_images"] == 5 and headline["model"] == "sa2net"

    diff = json.loads(_run(tmp_path, *DVC, "metrics", "diff", "HEAD~1", "HEAD", "--json"))
    change = diff["data/08_reporting/synthetic/metrics.json"]["dice"]
    assert change["diff"] == pytest.approx(0.1, abs=1e-4)
    # the whole summary on demand (every model's intervals, comparisons)
    full = json.loads(_run(tmp_path, *DVC, "metrics", "diff", "HEAD~1", "HEAD", "--json",
                           "--targets", "data/08_reporting/synthetic/test_summary.json"))
    summary_path = "data/08_reporting/synthetic/test_summary.json"
    assert "models.sa2net.intervals.dice.low" in full[summary_path]

    plots = json.loads(_run(tmp_path, *DVC, "plots", "diff", "HEAD~1", "HEAD", "--json"))["data"]
    for path, field in (
        ("data/06_models/synthetic/training_history.csv", "val_dice"),
        ("data/08_reporting/synthetic/test_metrics_per_image.csv", "dice"),
    ):
        (plot,) = plots[path]
        values = plot["content"]["data"]["values"]
        assert {v["rev"] for v in values} == {"HEAD~1", "HEAD"}
        assert field in values[0]
