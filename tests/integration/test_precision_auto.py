"""``kedro run --params training.precision=auto``: the variant measured on this machine is
the one training used, and MLflow records it (tags ``sa2.<model>/fold<k>/precision`` and
``.../weight_grad_layout``); the measurement is cached, and a cached choice is what the
next run uses. ``auto`` is the default; ``training.precision=fp32`` overrides it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

VENV_BIN = Path(sys.executable).parent
PIPELINES = "data_ingestion,data_processing,training"
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:mlflow")


def _tags(project) -> dict[str, str]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=project.tracking_uri)
    experiment = client.get_experiment_by_name(f"sa2-{project.dataset}")
    runs = client.search_runs([experiment.experiment_id], order_by=["start_time DESC"])
    return runs[0].data.tags


def test_kedro_run_records_the_measured_precision(make_project_copy, tmp_path):
    project = make_project_copy("precision-auto", tiny_config_in="local")
    cache = tmp_path / "cache"
    env = {**project.env, "SA2_CACHE_DIR": str(cache)}
    kedro = str(VENV_BIN / "kedro")
    project.run(kedro, "run", "--pipelines", PIPELINES, "--params", "training.precision=auto",
                env=env)

    records = [json.loads(p.read_text()) for p in sorted(cache.glob("precision-*.json"))]
    by_model = {r["key"]["model"]: r for r in records if r["key"]["workload"] == "train"}
    assert set(by_model) == {"SA2Net", "UNet"}, records
    tags = _tags(project)
    for model, name in (("SA2Net", "sa2net"), ("UNet", "unet")):
        record = by_model[model]
        assert record["key"]["candidates"] == ["fp32", "fp32-nchw-wgrad", "bf16"]
        assert set(record["median_step_s"]) >= {"fp32", "bf16"}
        precision, layout = {"fp32": ("fp32", "native"), "fp32-nchw-wgrad": ("fp32", "nchw"),
                             "bf16": ("bf16", "native")}[record["choice"]]
        assert tags[f"sa2.{name}/fold0/precision"] == precision
        assert tags[f"sa2.{name}/fold0/weight_grad_layout"] == layout
        assert tags[f"sa2.{name}/fold0/precision_requested"] == "auto"

    # The next run reads the cache: force the other precision there and train afresh.
    for path in cache.glob("precision-*.json"):
        record = json.loads(path.read_text())
        if record["key"]["model"] == "SA2Net":
            forced = "bf16" if record["choice"] != "bf16" else "fp32"
            path.write_text(json.dumps({**record, "choice": forced}))
    project.run(kedro, "run", "--pipelines", PIPELINES, "--params",
                "training.precision=auto,training.seed=7", env=env)
    assert _tags(project)["sa2.sa2net/fold0/precision"] == forced

    # No --params: the default is auto, so the cached bf16 is used; asking for fp32
    # through kedro run trains in fp32 instead.
    for path in cache.glob("precision-*.json"):
        record = json.loads(path.read_text())
        if record["key"]["model"] == "SA2Net" and "bf16" in record["key"]["candidates"]:
            path.write_text(json.dumps({**record, "choice": "bf16"}))
    project.run(kedro, "run", "--pipelines", PIPELINES, "--params", "training.seed=8", env=env)
    tags = _tags(project)
    assert tags["sa2.sa2net/fold0/precision_requested"] == "auto"
    assert tags["sa2.sa2net/fold0/precision"] == "bf16"
    project.run(kedro, "run", "--pipelines", PIPELINES, "--params",
                "training.precision=fp32,training.seed=9", env=env)
    tags = _tags(project)
    assert tags["sa2.sa2net/fold0/precision_requested"] == "fp32"
    assert tags["sa2.sa2net/fold0/precision"] == "fp32"
