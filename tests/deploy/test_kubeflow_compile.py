"""``sa2-pipeline kubeflow compile``: each pipeline of deploy/kubeflow compiles to IR YAML
that kfp's own loader reads back, with its components, the retraining ``dsl.If``, the
inference ``dsl.ParallelFor``, and the image and volume given as settings.

kfp lives in its own venv (``make kfp-venv`` -> ``.venv-kfp``, or ``$SA2_KFP_PYTHON``);
without it these tests skip (the error test runs everywhere).
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from sa2_pipeline.cli import main
from sa2_pipeline.config import KubeflowConfig

REPO_ROOT = Path(__file__).resolve().parents[2]

# Run in the kfp venv: load the file with kfp's loader, describe what it holds.
_LOAD = textwrap.dedent("""
    import json, sys
    from google.protobuf import json_format
    from kfp import components

    component = components.load_component_from_file(sys.argv[1])
    spec = json_format.MessageToDict(component.pipeline_spec)
    platform = json_format.MessageToDict(component.platform_spec) \\
        if component.platform_spec else {}

    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values()
                                    if "dag" in c]
    shown = {k: t.get("taskInfo", {}).get("name", k) for d in dags
             for k, t in d.get("tasks", {}).items()}
    found = {}  # by the name the UI shows (dsl.If / ParallelFor name=...)
    for dag in dags:
        for key, task in dag.get("tasks", {}).items():
            found[shown[key]] = {
                "component": task["componentRef"]["name"],
                "condition": task.get("triggerPolicy", {}).get("condition"),
                "iterator": "parameterIterator" in task,
                "retries": task.get("retryPolicy", {}).get("maxRetryCount"),
                "after": sorted(shown[d] for d in task.get("dependentTasks", []))}
    executors = spec["deploymentSpec"]["executors"]
    pvcs = {name: [m.get("pvcNameParameter", {}).get("runtimeValue", {}).get("constant")
                   for m in cfg.get("pvcMount", [])]
            for name, cfg in platform.get("platforms", {}).get("kubernetes", {})
                                     .get("deploymentSpec", {}).get("executors", {}).items()}
    mounts = sorted({m.get("mountPath") for cfg in platform.get("platforms", {})
                     .get("kubernetes", {}).get("deploymentSpec", {}).get("executors", {})
                     .values() for m in cfg.get("pvcMount", [])})
    print("LOADED " + json.dumps({
        "name": component.name, "tasks": found,
        "images": sorted({e["container"]["image"] for e in executors.values()}),
        "inputs": {k: v.get("defaultValue") for k, v in
                   spec["root"]["inputDefinitions"]["parameters"].items()},
        "pvcs": pvcs, "mounts": mounts}))
""")


def kfp_python() -> Path:
    python = Path(os.environ.get("SA2_KFP_PYTHON") or REPO_ROOT / ".venv-kfp" / "bin" / "python")
    if not python.exists():
        pytest.skip(f"no kfp venv at {python}: run `make kfp-venv`")
    return python


def compile_and_load(tmp_path: Path, pipeline: str, *options: str) -> dict:
    python = kfp_python()
    out = tmp_path / f"{pipeline}.yaml"
    code = main(["kubeflow", "compile", "--env", "synthetic", "--pipeline", pipeline,
                 "--out", str(out), "--project-dir", str(REPO_ROOT), *options])
    assert code == 0 and out.is_file()
    proc = subprocess.run([str(python), "-c", _LOAD, str(out)], capture_output=True,
                          text=True, timeout=120, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("LOADED ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1].removeprefix("LOADED "))


@pytest.fixture
def kfp_env(monkeypatch):
    monkeypatch.setenv("SA2_KFP_PYTHON", str(kfp_python()))


def test_training_is_five_kedro_stages_after_the_run_is_created(tmp_path, kfp_env):
    loaded = compile_and_load(tmp_path, "training")
    defaults = KubeflowConfig()
    assert loaded["name"] == "sa2-training"
    chain = ["start-mlflow-run", "data-ingestion", "data-processing", "training",
             "evaluation", "reporting"]
    assert {t: loaded["tasks"][t]["component"] for t in chain} == {
        t: f"comp-{t}" for t in chain}
    for before, after in zip(chain, chain[1:], strict=False):
        assert loaded["tasks"][after]["after"] == [before]  # each hands the run id on
    assert loaded["images"] == [defaults.image]
    assert loaded["inputs"]["dataset"] == "synthetic"
    assert loaded["inputs"]["project_dir"] == defaults.project_dir
    assert loaded["mounts"] == [defaults.mount_path]
    assert all(pvcs == [defaults.pvc_name] for pvcs in loaded["pvcs"].values())
    assert len(loaded["pvcs"]) == len(chain)  # every task sees the catalog's volume


def test_retraining_retrains_only_under_the_if(tmp_path, kfp_env):
    loaded = compile_and_load(tmp_path, "retraining")
    tasks = loaded["tasks"]
    assert loaded["name"] == "sa2-retraining"
    assert {"detect", "new-slides", "retrain", "retrain-report"} <= set(tasks)
    condition = tasks["new-slides"]["condition"]
    assert condition and "detect" in condition  # dsl.If on detect's output
    assert tasks["new-slides"]["after"] == ["detect"]
    assert tasks["retrain-report"]["after"] == ["retrain"]


def test_inference_fans_out_over_parts_then_merges(tmp_path, kfp_env):
    loaded = compile_and_load(tmp_path, "inference", "--num-parts", "3", "--part-retries",
                              "4")
    tasks = loaded["tasks"]
    assert loaded["name"] == "sa2-inference"
    assert tasks["parts"]["iterator"]  # the dsl.ParallelFor
    assert tasks["parts"]["after"] == ["list-inputs"]
    assert tasks["segment-part"]["retries"] == 4
    assert tasks["merge-parts"]["after"] == ["list-inputs", "parts"]
    assert loaded["inputs"]["num_parts"] == 3


def test_image_and_volume_are_settings(tmp_path, kfp_env):
    loaded = compile_and_load(tmp_path, "training", "--image", "registry.example/sa2:7",
                              "--pvc", "team-data", "--mount-path", "/srv/sa2/data",
                              "--project-dir-in-image", "/srv/sa2")
    assert loaded["images"] == ["registry.example/sa2:7"]
    assert loaded["mounts"] == ["/srv/sa2/data"]
    assert {p for pvcs in loaded["pvcs"].values() for p in pvcs} == {"team-data"}
    assert loaded["inputs"]["project_dir"] == "/srv/sa2"
    no_volume = compile_and_load(tmp_path, "training", "--pvc", "")
    assert no_volume["pvcs"] == {} and no_volume["mounts"] == []


def test_mistakes_are_reported_not_raised(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SA2_KFP_PYTHON", str(tmp_path / "no-python"))
    out = tmp_path / "p.yaml"
    args = ["kubeflow", "compile", "--env", "synthetic", "--out", str(out),
            "--project-dir", str(REPO_ROOT)]
    assert main(args) == 1
    assert "make kfp-venv" in capsys.readouterr().err
    assert main([*args[:-4], "--out", str(tmp_path / "p.json"), *args[-2:]]) == 1
    assert "must end in .yaml" in capsys.readouterr().err
    assert main(["kubeflow", "compile", "--env", "nope", "--out", str(out),
                 "--project-dir", str(REPO_ROOT)]) == 1
    assert "'nope' is not an environment" in capsys.readouterr().err
    assert not out.exists()
