"""Kubeflow Pipelines: compile and run the pipelines of deploy/kubeflow, and the small
steps their tasks call (docs/kubeflow.md).

kfp lives in a venv of its own (``make kfp-venv`` -> ``.venv-kfp``, or ``$SA2_KFP_PYTHON``):
it pins ``requests`` and ``protobuf`` below this project's. So ``compile`` and
``run-local`` run ``deploy/kubeflow/pipelines.py`` with that Python, and the tasks call
back into this venv (``sa2-pipeline kubeflow start-run | list-inputs | merge``, ``kedro
run``), as the Airflow DAGs do.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from sa2_pipeline.config import InferenceConfig, KubeflowConfig, RegistryConfig, parse
from sa2_pipeline.inference.parts import merge_parts
from sa2_pipeline.inference.run import collect_inputs
from sa2_pipeline.pipelines.retraining.request import load_parameters
from sa2_pipeline.tracking.model_loading import resolve_model
from sa2_pipeline.tracking.orchestrated_run import create_run
from sa2_pipeline.user_errors import UserError

PIPELINES = ("training", "retraining", "inference")
KFP_PYTHON_ENV = "SA2_KFP_PYTHON"
_PACKAGE_PROJECT = Path(__file__).resolve().parents[2]  # src/sa2_pipeline -> the checkout


class KubeflowError(UserError, RuntimeError):
    """kfp is not installed, a file cannot be written, no model to segment with, or a
    pipeline run failed."""


def kfp_python(project_dir: Path) -> Path:
    """The Python with kfp: ``$SA2_KFP_PYTHON``, else ``<project>/.venv-kfp/bin/python``."""
    explicit = os.environ.get(KFP_PYTHON_ENV)
    python = Path(explicit) if explicit else project_dir / ".venv-kfp" / "bin" / "python"
    if not python.exists():
        raise KubeflowError(f"no kfp Python at {python}: run `make kfp-venv` (or set "
                            f"{KFP_PYTHON_ENV} to a Python with kfp and kfp-kubernetes)")
    return python


def pipelines_file(project_dir: Path) -> Path:
    """deploy/kubeflow/pipelines.py of ``project_dir``, else of this package's checkout."""
    for root in (project_dir, _PACKAGE_PROJECT):
        path = root / "deploy" / "kubeflow" / "pipelines.py"
        if path.is_file():
            return path
    raise KubeflowError(f"deploy/kubeflow/pipelines.py is in neither {project_dir} nor "
                        f"{_PACKAGE_PROJECT}: run from the project checkout")


def _check_env(project_dir: Path, env: str) -> None:
    load_parameters(project_dir, env)  # names the environments when env is not one


def _run_pipelines_file(project_dir: Path, args: list[str]) -> dict[str, Any]:
    """Run deploy/kubeflow/pipelines.py with the kfp Python (its output passes through)
    and return the JSON summary it leaves in a result file."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="sa2-kfp-") as tmp:
        result = Path(tmp) / "result.json"
        command = [str(kfp_python(project_dir)), str(pipelines_file(project_dir)), *args,
                   "--result", str(result)]
        proc = subprocess.run(command, cwd=project_dir, check=False)
        if proc.returncode != 0 or not result.is_file():
            raise KubeflowError(f"deploy/kubeflow/pipelines.py {args[0]} --pipeline "
                                f"{args[args.index('--pipeline') + 1]} exited "
                                f"{proc.returncode} (its output is above)")
        return json.loads(result.read_text())


def _settings_args(settings: KubeflowConfig) -> list[str]:
    return ["--image", settings.image, "--pvc", settings.pvc_name, "--mount-path",
            settings.mount_path, "--project-dir", settings.project_dir, "--cli",
            settings.cli, "--tracking-uri", settings.tracking_uri,
            "--part-retries", str(settings.part_retries)]


def compile_pipeline(project_dir: Path, env: str, pipeline: str, out: Path,
                     settings: KubeflowConfig, num_parts: int = 0) -> dict[str, Any]:
    """Write the IR YAML of ``pipeline`` for dataset ``env`` to ``out`` (atomically)."""
    if out.suffix != ".yaml":
        raise KubeflowError(f"--out {out}: the pipeline file must end in .yaml")
    if not out.resolve().parent.is_dir():
        raise KubeflowError(f"--out {out}: the folder {out.parent} does not exist")
    _check_env(project_dir, env)
    return _run_pipelines_file(project_dir, [
        "compile", "--env", env, "--pipeline", pipeline, "--out", str(out.resolve()),
        "--num-parts", str(num_parts), *_settings_args(settings)])


def run_local(project_dir: Path, env: str, pipeline: str, num_parts: int = 0,
              pipeline_root: Path | None = None) -> dict[str, Any]:
    """Run ``pipeline`` with KFP's local subprocess runner on this checkout: the tasks run
    this venv's ``sa2-pipeline`` and ``kedro`` in ``project_dir``; no image, no volume."""
    _check_env(project_dir, env)
    local = dataclasses.replace(
        KubeflowConfig(), pvc_name="", project_dir=str(project_dir.resolve()),
        cli=str(Path(sys.executable).parent / "sa2-pipeline"),
        tracking_uri=os.environ.get("MLFLOW_TRACKING_URI", ""))
    root = pipeline_root or project_dir / "data" / "kfp-local"
    return _run_pipelines_file(project_dir, [
        "run-local", "--env", env, "--pipeline", pipeline, "--num-parts", str(num_parts),
        "--pipeline-root", str(root.resolve()), *_settings_args(local)])


def start_run(project_dir: Path, env: str) -> dict[str, Any]:
    """Create the MLflow run the training pipeline's tasks log into, as kedro-mlflow would
    name it (experiment, run name and tracking URI of ``conf/<env>``)."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    _check_env(project_dir, env)
    bootstrap_project(project_dir)
    with KedroSession.create(project_path=project_dir, env=env) as session:
        mlflow_config = session.load_context().mlflow  # kedro-mlflow set the tracking URI
        run_id = create_run(mlflow_config.tracking.experiment.name,
                            mlflow_config.tracking.run.name or env, "kubeflow")
    return {"run_id": run_id, "dataset": env}


def _inference_settings(project_dir: Path, env: str) -> tuple[InferenceConfig, str]:
    params = load_parameters(project_dir, env)
    cfg = parse(InferenceConfig, params.get("inference"), "inference")
    return cfg, parse(RegistryConfig, params.get("registry"), "registry").model_name


def plan_inference(project_dir: Path, env: str, num_parts: int = 0) -> dict[str, Any]:
    """Resolve the model to one version (every part uses it) and count the inputs."""
    cfg, model_name = _inference_settings(project_dir, env)
    requested = cfg.model_uri or f"models:/{model_name}@champion"
    try:
        model = resolve_model(requested)
    except ValueError as err:
        raise KubeflowError(f"{requested}: {err} (train and register a model first, or "
                            "set inference.model_uri)") from err
    parts = num_parts or cfg.num_parts
    if parts < 1:
        raise KubeflowError(f"--num-parts must be >= 0 (0: inference.num_parts), got {parts}")
    out_dir = Path(cfg.output_dir) / model.label
    input_dir = project_dir / cfg.input_dir
    if not input_dir.is_dir():
        raise KubeflowError(f"inference.input_dir {cfg.input_dir} is not a folder of "
                            f"{project_dir}")
    count = len(collect_inputs([input_dir], exclude=project_dir / out_dir))
    return {"parts": list(range(parts)), "num_parts": parts, "model_uri": model.uri,
            "out_dir": str(out_dir), "inputs": count}


def merge(project_dir: Path, env: str, out_dir: str) -> dict[str, Any]:
    """The run index of ``out_dir`` over every input of the dataset's ``input_dir``."""
    cfg, _ = _inference_settings(project_dir, env)
    return merge_parts(project_dir / cfg.input_dir, project_dir / out_dir)
