"""Kubeflow Pipelines v2 definitions of sa2-pipeline (docs/kubeflow.md).

Runs in a Python with ``kfp`` and ``kfp-kubernetes`` (``make kfp-venv`` -> ``.venv-kfp``),
never in the project's own venv: kfp pins ``requests`` and ``protobuf`` below the project's.
Every component is a lightweight Python component that calls the project's command line
(``sa2-pipeline`` or ``kedro`` in the project's venv) in the project's folder, the way the
Airflow DAGs do; data stays in Kedro's catalog on the shared volume and KFP passes only
small records between tasks (an MLflow run id, a yes/no, a part list, a JSON summary).

Use it through the project's command line, which passes every setting with the defaults
of ``sa2_pipeline.config.KubeflowConfig`` and runs this file with the kfp venv's Python:

    sa2-pipeline kubeflow compile --env synthetic -p training --out training.yaml
    sa2-pipeline kubeflow run-local --env synthetic -p inference --num-parts 2
"""

# No `from __future__ import annotations`: kfp reads the components' type hints.
import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from kfp import compiler, dsl

PIPELINES = ("training", "retraining", "inference")
LOCK_HELD_EXIT = 75  # sa2-pipeline retrain: another retrain holds the dataset's lock


# --------------------------------------------------------------------------------------
# Components. A lightweight component ships only its own function's source, so each body
# is self-contained (imports inside, no shared helper).
# --------------------------------------------------------------------------------------
def start_mlflow_run(dataset: str, project_dir: str, cli: str, tracking_uri: str) -> str:
    """Create the model's one MLflow run; later tasks log into it (its id is the output)."""
    import json
    import os
    import subprocess

    env = dict(os.environ, **({"MLFLOW_TRACKING_URI": tracking_uri} if tracking_uri else {}))
    proc = subprocess.run([cli, "kubeflow", "start-run", "--env", dataset], cwd=project_dir,
                          env=env, capture_output=True, text=True, check=False)
    print(proc.stdout[-4000:], proc.stderr[-4000:])
    if proc.returncode != 0:
        raise RuntimeError(f"sa2-pipeline kubeflow start-run exited {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])["run_id"]


def data_ingestion(dataset: str, project_dir: str, cli: str, tracking_uri: str,
                   run_id: str) -> str:
    """``kedro run --pipelines data_ingestion --env <dataset>`` logging into run ``run_id``."""
    import os
    import subprocess
    from pathlib import Path

    env = dict(os.environ, MLFLOW_RUN_ID=run_id,
               **({"MLFLOW_TRACKING_URI": tracking_uri} if tracking_uri else {}))
    subprocess.run([str(Path(cli).parent / "kedro"), "run", "--pipelines", "data_ingestion",
                    "--env", dataset], cwd=project_dir, env=env, check=True)
    return run_id


def data_processing(dataset: str, project_dir: str, cli: str, tracking_uri: str,
                    run_id: str) -> str:
    """``kedro run --pipelines data_processing --env <dataset>`` logging into run ``run_id``."""
    import os
    import subprocess
    from pathlib import Path

    env = dict(os.environ, MLFLOW_RUN_ID=run_id,
               **({"MLFLOW_TRACKING_URI": tracking_uri} if tracking_uri else {}))
    subprocess.run([str(Path(cli).parent / "kedro"), "run", "--pipelines", "data_processing",
                    "--env", dataset], cwd=project_dir, env=env, check=True)
    return run_id


def training(dataset: str, project_dir: str, cli: str, tracking_uri: str,
             run_id: str) -> str:
    """``kedro run --pipelines training --env <dataset>`` logging into run ``run_id``."""
    import os
    import subprocess
    from pathlib import Path

    env = dict(os.environ, MLFLOW_RUN_ID=run_id,
               **({"MLFLOW_TRACKING_URI": tracking_uri} if tracking_uri else {}))
    subprocess.run([str(Path(cli).parent / "kedro"), "run", "--pipelines", "training",
                    "--env", dataset], cwd=project_dir, env=env, check=True)
    return run_id


def evaluation(dataset: str, project_dir: str, cli: str, tracking_uri: str,
               run_id: str) -> str:
    """``kedro run --pipelines evaluation --env <dataset>`` logging into run ``run_id``."""
    import os
    import subprocess
    from pathlib import Path

    env = dict(os.environ, MLFLOW_RUN_ID=run_id,
               **({"MLFLOW_TRACKING_URI": tracking_uri} if tracking_uri else {}))
    subprocess.run([str(Path(cli).parent / "kedro"), "run", "--pipelines", "evaluation",
                    "--env", dataset], cwd=project_dir, env=env, check=True)
    return run_id


def reporting(dataset: str, project_dir: str, cli: str, tracking_uri: str,
              run_id: str) -> str:
    """``kedro run --pipelines reporting --env <dataset>`` logging into run ``run_id``."""
    import os
    import subprocess
    from pathlib import Path

    env = dict(os.environ, MLFLOW_RUN_ID=run_id,
               **({"MLFLOW_TRACKING_URI": tracking_uri} if tracking_uri else {}))
    subprocess.run([str(Path(cli).parent / "kedro"), "run", "--pipelines", "reporting",
                    "--env", dataset], cwd=project_dir, env=env, check=True)
    return run_id


def detect(dataset: str, project_dir: str, cli: str, tracking_uri: str) -> bool:
    """``sa2-pipeline detect``: True when new or changed annotated slides wait."""
    import json
    import os
    import subprocess

    env = dict(os.environ, **({"MLFLOW_TRACKING_URI": tracking_uri} if tracking_uri else {}))
    proc = subprocess.run([cli, "detect", "--env", dataset], cwd=project_dir, env=env,
                          capture_output=True, text=True, check=False)
    print(proc.stdout[-4000:], proc.stderr[-4000:])
    if proc.returncode != 0:
        raise RuntimeError(f"sa2-pipeline detect --env {dataset} exited {proc.returncode}")
    return bool(json.loads(proc.stdout.strip().splitlines()[-1])["retrain"])


def retrain(dataset: str, project_dir: str, cli: str, tracking_uri: str) -> str:
    """``sa2-pipeline retrain`` (under the dataset's lock); "lock-held" when another
    retrain of the dataset is running (exit 75), else its last line."""
    import os
    import subprocess

    env = dict(os.environ, **({"MLFLOW_TRACKING_URI": tracking_uri} if tracking_uri else {}))
    proc = subprocess.run([cli, "retrain", "--env", dataset], cwd=project_dir, env=env,
                          capture_output=True, text=True, check=False)
    print(proc.stdout[-8000:], proc.stderr[-8000:])
    if proc.returncode == 75:
        return "lock-held"
    if proc.returncode != 0:
        raise RuntimeError(f"sa2-pipeline retrain --env {dataset} exited {proc.returncode}")
    return (proc.stdout.strip().splitlines() or [""])[-1]


def retrain_report(dataset: str, project_dir: str, cli: str, outcome: str) -> str:
    """``sa2-pipeline retrain-report``: the retraining record (printed and returned)."""
    import subprocess

    print("retrain:", outcome)
    proc = subprocess.run([cli, "retrain-report", "--env", dataset], cwd=project_dir,
                          capture_output=True, text=True, check=True)
    print(proc.stdout)
    return proc.stdout[-2000:]


def list_inputs(dataset: str, project_dir: str, cli: str, tracking_uri: str,
                num_parts: int) -> list:
    """Resolve the model to one version and plan the parts: one record per part (its id,
    the number of parts, that version's URI and output folder). ``num_parts`` 0: the
    dataset's ``inference.num_parts``. (One list output: what ``dsl.ParallelFor`` takes,
    on a cluster and in the local runner.)"""
    import json
    import os
    import subprocess

    env = dict(os.environ, **({"MLFLOW_TRACKING_URI": tracking_uri} if tracking_uri else {}))
    proc = subprocess.run([cli, "kubeflow", "list-inputs", "--env", dataset,
                           "--num-parts", str(num_parts)], cwd=project_dir, env=env,
                          capture_output=True, text=True, check=False)
    print(proc.stdout[-4000:], proc.stderr[-4000:])
    if proc.returncode != 0:
        raise RuntimeError(f"sa2-pipeline kubeflow list-inputs exited {proc.returncode}")
    plan = json.loads(proc.stdout.strip().splitlines()[-1])
    return [dict(part_id=k, num_parts=plan["num_parts"], model_uri=plan["model_uri"],
                 out_dir=plan["out_dir"]) for k in plan["parts"]]


def segment_part(dataset: str, project_dir: str, cli: str, tracking_uri: str,
                 part: dict) -> dict:
    """``kedro run --pipelines inference`` for one part (``part`` from ``list_inputs``)
    with the one model version ``list_inputs`` resolved. A retry (or a rerun of the
    pipeline) skips the inputs already done: the folder run is resumable."""
    import os
    import subprocess
    from pathlib import Path

    env = dict(os.environ, **({"MLFLOW_TRACKING_URI": tracking_uri} if tracking_uri else {}))
    params = (f"inference.num_parts={int(part['num_parts'])},"
              f"inference.part_id={int(part['part_id'])},"
              f"inference.model_uri={part['model_uri']},inference.progress=false")
    kedro = str(Path(cli).parent / "kedro")
    proc = subprocess.run([kedro, "run", "--pipelines", "inference", "--env", dataset,
                           "--params", params], cwd=project_dir, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"part {part['part_id']}: kedro run --pipelines inference exited "
                           f"{proc.returncode} (the number of failed inputs, or an error)")
    return part


def merge_parts(dataset: str, project_dir: str, cli: str, parts: list) -> dict:
    """Merge the parts' records into one run index; fails if an input has none."""
    import json
    import subprocess

    proc = subprocess.run([cli, "kubeflow", "merge", "--env", dataset,
                           "--out-dir", parts[0]["out_dir"]], cwd=project_dir,
                          capture_output=True, text=True, check=False)
    print(proc.stdout[-4000:], proc.stderr[-4000:])
    if proc.returncode != 0:
        raise RuntimeError(f"sa2-pipeline kubeflow merge exited {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------
# Pipelines, built for one image and volume.
# --------------------------------------------------------------------------------------
def _component(function: Callable, image: str):
    return dsl.component(function, base_image=image, install_kfp_package=False)


def _on_volume(task, pvc: str, mount_path: str):
    """Mount the shared volume (the project's data/) on ``task``; no volume when ``pvc``
    is empty (a local run, or data in remote catalog paths)."""
    task.set_caching_options(False)  # every task reads or writes the shared volume
    if pvc:
        from kfp import kubernetes

        kubernetes.mount_pvc(task, pvc_name=pvc, mount_path=mount_path)
    return task


def build(name: str, *, image: str, pvc: str, mount_path: str, project_dir: str, cli: str,
          tracking_uri: str, part_retries: int):
    """The pipeline ``name`` (one of PIPELINES), its defaults the given settings."""
    comp = {f.__name__: _component(f, image) for f in (
        start_mlflow_run, detect, retrain, retrain_report, list_inputs, segment_part,
        merge_parts)}
    stages = [_component(f, image) for f in (data_ingestion, data_processing, training,
                                              evaluation, reporting)]

    def vol(task):
        return _on_volume(task, pvc, mount_path)

    if name == "training":
        @dsl.pipeline(name="sa2-training", description="ingestion -> processing -> "
                      "training -> evaluation -> reporting, one MLflow run")
        def training_pipeline(dataset: str, project_dir: str = project_dir, cli: str = cli,
                              tracking_uri: str = tracking_uri):
            common = dict(dataset=dataset, project_dir=project_dir, cli=cli,
                          tracking_uri=tracking_uri)
            run_id = vol(comp["start_mlflow_run"](**common)).output
            for stage in stages:  # each continues the run the previous one logged into
                run_id = vol(stage(run_id=run_id, **common)).output
        return training_pipeline

    if name == "retraining":
        @dsl.pipeline(name="sa2-retraining", description="detect -> (if new) retrain -> "
                      "report, under the dataset's lock")
        def retraining_pipeline(dataset: str, project_dir: str = project_dir, cli: str = cli,
                                tracking_uri: str = tracking_uri):
            common = dict(dataset=dataset, project_dir=project_dir, cli=cli)
            found = vol(comp["detect"](tracking_uri=tracking_uri, **common))
            with dsl.If(found.output == True, name="new-slides"):  # noqa: E712
                outcome = vol(comp["retrain"](tracking_uri=tracking_uri, **common))
                vol(comp["retrain_report"](outcome=outcome.output, **common))
        return retraining_pipeline

    if name == "inference":
        @dsl.pipeline(name="sa2-inference", description="list inputs -> one task per part "
                      "-> merge into one run index")
        def inference_pipeline(dataset: str, num_parts: int = 0,
                               project_dir: str = project_dir, cli: str = cli,
                               tracking_uri: str = tracking_uri):
            common = dict(dataset=dataset, project_dir=project_dir, cli=cli)
            plan = vol(comp["list_inputs"](tracking_uri=tracking_uri, num_parts=num_parts,
                                           **common))
            with dsl.ParallelFor(plan.output, name="parts") as one_part:
                part = vol(comp["segment_part"](tracking_uri=tracking_uri, part=one_part,
                                                **common))
                part.set_retry(num_retries=part_retries)
            vol(comp["merge_parts"](parts=plan.output, **common)).after(part)
        return inference_pipeline

    raise ValueError(f"unknown pipeline {name!r}: one of {', '.join(PIPELINES)}")


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("compile", "run-local"))
    parser.add_argument("--env", required=True, help="the dataset (Kedro environment)")
    parser.add_argument("--pipeline", choices=PIPELINES, default="training")
    parser.add_argument("--out", help="compile: the IR YAML to write")
    parser.add_argument("--image", required=True)
    parser.add_argument("--pvc", default="", help="the PVC mounted at --mount-path")
    parser.add_argument("--mount-path", required=True)
    parser.add_argument("--project-dir", required=True)
    parser.add_argument("--cli", required=True, help="the project's sa2-pipeline")
    parser.add_argument("--tracking-uri", default="")
    parser.add_argument("--num-parts", type=int, default=0,
                        help="inference: parts (0: the dataset's inference.num_parts)")
    parser.add_argument("--part-retries", type=int, required=True,
                        help="inference: retries of a failed part")
    parser.add_argument("--result", help="also write the JSON summary to this file")
    parser.add_argument("--pipeline-root", help="run-local: where KFP keeps task outputs")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    pipeline = build(args.pipeline, image=args.image, pvc=args.pvc,
                     mount_path=args.mount_path, project_dir=args.project_dir, cli=args.cli,
                     tracking_uri=args.tracking_uri, part_retries=args.part_retries)
    start = time.perf_counter()
    if args.action == "compile":
        arguments = {"dataset": args.env}
        if args.pipeline == "inference":
            arguments["num_parts"] = args.num_parts
        out = Path(args.out or f"sa2-{args.pipeline}-{args.env}.yaml")
        tmp = out.with_name(f".{out.name}.tmp.yaml")  # kfp wants a .yaml name
        compiler.Compiler().compile(pipeline, str(tmp), pipeline_parameters=arguments)
        tmp.replace(out)  # never a half-written file
        return _done(args, {"compiled": str(out), "pipeline": args.pipeline,
                            "seconds": round(time.perf_counter() - start, 2)})
    import warnings

    from kfp import local

    # Locally every task runs in this Python, whatever the image: that is the point.
    warnings.filterwarnings("ignore", message=".*non-Python base image", category=RuntimeWarning)

    root = args.pipeline_root or str(Path(args.project_dir) / "data" / "kfp-local")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=root)
    arguments = {"dataset": args.env}
    if args.pipeline == "inference":
        arguments["num_parts"] = args.num_parts
    pipeline(**arguments)  # local mode raises when a task fails
    return _done(args, {"pipeline": args.pipeline, "dataset": args.env,
                        "state": "SUCCEEDED", "seconds": round(time.perf_counter() - start, 2)})


def _done(args: argparse.Namespace, summary: dict) -> int:
    if args.result:  # the caller prints it
        Path(args.result).write_text(json.dumps(summary))
    else:
        print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
