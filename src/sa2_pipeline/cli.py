"""``sa2-pipeline``: thin command-line entry points over the library (no Kedro needed).

\b
    sa2-pipeline import-release CHECKPOINT --dataset monuseg   # release weights -> registry
    sa2-pipeline segment SLIDES_OR_FOLDERS... --model models:/sa2net-synthetic@champion \\
        --out masks/                                           # masks, overlays, CSVs
    sa2-pipeline make-synthetic-data data/01_raw/synthetic     # the embedded dataset
    sa2-pipeline retrain --env monuseg      # retrain on new slides, gated promotion
    sa2-pipeline rollback --model sa2net-monuseg --to-version 3
    sa2-pipeline serve --model models:/sa2net-synthetic@champion   # HTTP, one version
    sa2-pipeline kubeflow compile --env monuseg -p training --out training.yaml

The pipelines themselves run with `kedro run`. An option that is also a parameter (those
of `segment` are the `inference` parameters) takes its default from sa2_pipeline.config.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, get_args

# Click, because Kedro imports ``<package>.cli`` and merges its ``cli`` group into the
# ``kedro`` command: the same commands work as ``sa2-pipeline <cmd>`` and ``kedro <cmd>``.
import click

from sa2_pipeline import kubeflow
from sa2_pipeline.config import (
    INFERENCE_OUTPUTS,
    ConfigError,
    Engine,
    InferenceConfig,
    KubeflowConfig,
    SyntheticDataConfig,
)
from sa2_pipeline.inference.engine_sessions import ENGINES
from sa2_pipeline.inference.run import collect_inputs, predictor_settings, run_folder
from sa2_pipeline.locks import LockHeldError
from sa2_pipeline.models.bundle import make_bundle
from sa2_pipeline.runtime.precision import PRECISIONS
from sa2_pipeline.runtime.threads import choose_wait_policy
from sa2_pipeline.tracking.model_loading import load_predictor, resolve_model
from sa2_pipeline.tracking.server import (
    EXIT_REFUSED,
    bound_http_requests,
    refused_by_server,
    require_existing_store,
    unreachable_server,
)
from sa2_pipeline.tracking.serving import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    DEFAULT_WORKERS,
    START_TIMEOUT_S,
    ModelServer,
    ServeError,
    default_log_path,
    serve_until_signalled,
)
from sa2_pipeline.user_errors import check_output_folder, find_in_chain, find_user_error, verbose

logger = logging.getLogger("sa2_pipeline.cli")

_DEVICES = ("auto", "cpu", "cuda")


def _default(schema: type, name: str) -> Any:
    """The schema's default of field ``name``: what an option leaves unchanged."""
    field = next(f for f in dataclasses.fields(schema) if f.name == name)
    return field.default_factory() if field.default is dataclasses.MISSING else field.default


def _setting(schema: type, name: str, *decls: str, **kwargs: Any):
    """``click.option`` for the schema field ``name``, its default the schema's."""
    return click.option(*decls, name, default=_default(schema, name), show_default=True,
                        **kwargs)


@click.group(name="sa2-pipeline", help=__doc__)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def cli(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


@cli.command("import-release")
@click.argument("checkpoint")
@click.option("--dataset", required=True, help="Names the experiment and the model.")
@click.option("--model-name", default=None, help="Registered model (default sa2net-<dataset>).")
@click.option("--alias", default="release", show_default=True, help="Alias to set.")
@click.option("--resize-to", type=int, default=224, show_default=True,
              help="Side the release was trained at.")
@click.option("--trust", is_flag=True,
              help="Unpickle with weights_only=False (only for files you trust).")
def import_release(checkpoint: str, dataset: str, model_name: str | None, alias: str,
                   resize_to: int, trust: bool) -> None:
    """Register a release checkpoint in MLflow (BGR, [0, 1], resized input)."""
    from sa2_pipeline.models.sa2net import load_official_checkpoint
    from sa2_pipeline.tracking.registration import register_release

    path = Path(checkpoint)
    if not path.is_file():
        raise SystemExit(f"{path}: no such checkpoint file")
    model = load_official_checkpoint(path, weights_only=not trust)
    bundle = make_bundle(
        model_name="sa2net",
        init_kwargs=model.init_kwargs,
        state_dict={k: v.detach().cpu() for k, v in model.state_dict().items()},
        channel_order="bgr",  # the release reads images with OpenCV: BGR in [0, 1]
        patch_size=resize_to,
        resize_to=resize_to,
        metadata={"source": "release checkpoint", "checkpoint": path.name},
    )
    name = model_name or f"sa2net-{dataset}"
    record = register_release(
        bundle,
        model_name=name,
        experiment=f"sa2-{dataset}",
        run_name=f"import {path.name}",
        run_tags={"source": "release checkpoint", "checkpoint": path.name},
        params={"model.name": "sa2net",
                **{f"model.{k}": v for k, v in model.init_kwargs.items()},
                "input.channel_order": "bgr", "input.resize_to": resize_to},
        alias=alias,
    )
    print(f"registered {name} version {record['version']} (alias '{alias}', run "
          f"{record['run_id']}): load it with mlflow.pyfunc.load_model('models:/{name}@"
          f"{alias}')")


@cli.command("segment")
@click.argument("images", nargs=-1, required=True)
@click.option("--model", "model_uri", required=True,
              help="e.g. models:/sa2net-monuseg@champion")
@click.option("--out", "output_dir", required=True,
              help="Folder for the masks, overlays and CSVs.")
@_setting(InferenceConfig, "threshold", "--threshold", type=float)
@_setting(InferenceConfig, "tta", "--tta/--no-tta",
          help="Test-time augmentation (8 D4 transforms).")
@_setting(InferenceConfig, "overlap", "--overlap", type=float)
@_setting(InferenceConfig, "batch_size", "--batch-size", type=int, help="Tiles per pass.")
@_setting(InferenceConfig, "precision", "--precision", type=click.Choice(PRECISIONS))
@_setting(InferenceConfig, "engine", "--engine", type=click.Choice(get_args(Engine)),
          help="What runs the network (auto: the fastest that agrees with eager, measured "
               "once per machine).")
@_setting(InferenceConfig, "patch_size", "--patch-size", type=int,
          help="Tile side (default: the model's).")
@_setting(InferenceConfig, "model_mpp", "--model-mpp", type=float,
          help="Training pixel size, um/px (default: the model's sa2.pixel_size_um tag).")
@_setting(InferenceConfig, "skip_background", "--skip-background/--all-tiles",
          help="Skip tiles with no tissue (--all-tiles: segment every tile).")
@_setting(InferenceConfig, "device", "--device", type=click.Choice(_DEVICES))
@_setting(InferenceConfig, "progress", "--progress/--no-progress", help="Progress bars.")
@_setting(InferenceConfig, "num_threads", "--threads", type=int,
          help="torch CPU threads; 0 = automatic (free cores, or $SA2_NUM_THREADS).")
@_setting(InferenceConfig, "outputs", "--outputs", type=click.Choice(INFERENCE_OUTPUTS),
          multiple=True, help="Files per input, repeat for several: mask, ome (OME-TIFF), "
          "geojson (QuPath), labels (instance OME-TIFF).")
def segment(images: tuple[str, ...], **settings: Any) -> None:
    """Segment images and whole slides (files, folders, globs) with a registered model."""

    try:
        cfg = InferenceConfig(**settings)
        inputs = collect_inputs(images, exclude=Path(cfg.output_dir))
        check_output_folder(cfg.output_dir, "--out")  # before the model is loaded
        model = resolve_model(cfg.model_uri)
        logger.info("model %s resolved to version %s (%s)", model.requested_uri,
                    model.version, model.uri)
        summary = run_folder(cfg, model, lambda device: load_predictor(
            model, device=device, **predictor_settings(cfg)),
                             inputs=inputs, out_dir=Path(cfg.output_dir))
    except (ConfigError, ValueError, OSError) as err:  # OSError: an output not written
        raise SystemExit(f"segment: {err}") from err
    for name, reason in summary["failed"].items():
        print(f"{name}: {reason}", file=sys.stderr)
    print(f"segmented {len(summary['done'])} input(s) into {cfg.output_dir} with "
          f"{summary['model']['uri']}; {len(summary['skipped'])} already done, "
          f"{len(summary['failed'])} failed")
    raise SystemExit(min(len(summary["failed"]), 100))


@cli.command("serve")
@click.option("--model", "model_uri", required=True,
              help="e.g. models:/sa2net-monuseg@champion (served as the version it names now)")
@click.option("--host", default=DEFAULT_HOST, show_default=True,
              help="Interface to listen on (0.0.0.0: every interface).")
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT,
              show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=DEFAULT_WORKERS,
              show_default=True, help="uvicorn worker processes.")
@click.option("--log", "log_file", default=None,
              help="The server's output (default: <tmp>/sa2-serve-<name>-v<version>-<port>.log).")
@click.option("--start-timeout", type=click.FloatRange(min=1), default=START_TIMEOUT_S,
              show_default=True, help="Seconds to wait for the server to answer /ping.")
@click.option("--engine", type=click.Choice(ENGINES), default=None,
              help="What runs the served network, a load-time setting (set as the "
                   "server's $MLFLOW_PYFUNC_INFERENCE_CONFIG, merged into yours). "
                   "Not given: that variable's engine, else the model's default, "
                   f"{InferenceConfig.engine} (docs/inference.md).")
def serve(model_uri: str, host: str, port: int, workers: int, log_file: str | None,
          start_timeout: float, engine: str | None) -> None:
    """Serve a registered model over HTTP (mlflow models serve) until Ctrl-C or SIGTERM,
    which stop the server's whole process group: no uvicorn is left on the port."""
    try:
        model = resolve_model(model_uri)
    except ValueError as err:
        raise SystemExit(f"serve: {err}") from err
    log_path = Path(log_file) if log_file else default_log_path(model.label, port)
    print(f"serving {model.requested_uri} as version {model.version} ({model.uri})",
          flush=True)
    try:
        server = ModelServer.start(model.uri, host=host, port=port, workers=workers,
                                   log_path=log_path, engine=engine)
        print(f"server process group {server.pgid}; log: {log_path}", flush=True)
        print(f"engine: {_served_engine(engine, server.engine)}", flush=True)
        serve_until_signalled(server, timeout_s=start_timeout, on_ready=lambda: print(
            f"ready: {server.url}/invocations (Ctrl-C or kill -TERM {os.getpid()} stops "
            "it)", flush=True))
    except ServeError as err:
        raise SystemExit(f"serve: {err}") from err
    print("server stopped", flush=True)


def _served_engine(option: str | None, asked: str | None) -> str:
    """What ``serve`` prints about the engine: the one asked for, and by what."""
    if option is not None:
        return f"{option} (load-time setting, --engine)"
    if asked is not None:
        return f"{asked} (load-time setting, from $MLFLOW_PYFUNC_INFERENCE_CONFIG)"
    return f"{InferenceConfig.engine} (the model's default load-time setting)"


@cli.command("make-synthetic-data")
@click.argument("out")
@_setting(SyntheticDataConfig, "n_train", "--n-train", type=int)
@_setting(SyntheticDataConfig, "n_test", "--n-test", type=int)
@_setting(SyntheticDataConfig, "image_size", "--image-size", type=int)
@_setting(SyntheticDataConfig, "seed", "--seed", type=int)
@click.option("--prefix", default=None,
              help="Tile names PREFIX-TRAIN-000... [default: SYN]")
@click.option("--start", type=click.IntRange(min=0), default=None,
              help="Number of the first tile of each split. [default: 0]")
@click.option("--add", is_flag=True,
              help="Write the tiles next to the data already in OUT (new slides; --n-test 0 "
                   "keeps the test set): only new files, all or none; refused if a name "
                   "exists.")
def make_synthetic_data(out: str, prefix: str | None, start: int | None, add: bool,
                        **sizes: int) -> None:
    """Write the embedded synthetic dataset (a folder holding any file is kept).

    \b
    New slides for a retraining trial, next to the embedded ones:
        sa2-pipeline make-synthetic-data data/01_raw/synthetic --add --prefix NEW \\
            --n-train 4 --n-test 0
    """
    from sa2_pipeline.datasets.synthetic import (
        ensure_synthetic_monuseg,
        generate_synthetic_monuseg,
    )

    names = {k: v for k, v in (("prefix", prefix), ("start", start)) if v is not None}
    root = Path(out)
    try:
        if add:
            written = generate_synthetic_monuseg(root, add=True, **names, **sizes)
        else:
            made = ensure_synthetic_monuseg(root, **names, **sizes)
    except (ValueError, FileExistsError) as err:
        raise click.ClickException(str(err)) from err
    if add:
        stems = [p.stem for p in written[::2]]
        print(f"wrote {len(stems)} tile(s), {len(written)} files, into {out}: "
              f"{', '.join(stems)}")
    elif not made and names:
        raise click.ClickException(f"{out} already holds files; kept them. Add --add to "
                                   "write the new tiles next to them")
    else:
        print(f"{'generated' if made else 'kept existing data in'} {out}")


_RETRAIN_EPILOG = """Exit codes: 0 retrained (promoted or not) or nothing to do; 1 a step
failed (champion unchanged; rerun to resume), or registry.register is false (nothing run);
3 a raw file failed verification (nothing written); 4 the change touches the frozen
test set (see --change-test-set); 75 another retrain of this dataset holds its lock."""

_ENV = click.option("--env", required=True, help="The dataset's Kedro environment.")
_PROJECT = click.option("--project-dir", default=".", show_default=True,
                        help="The project checkout.")


@cli.command("retrain", epilog=_RETRAIN_EPILOG)
@_ENV
@_PROJECT
@click.option("--params", default="", help='Kedro --params for the run, "training.epochs=3".')
@click.option("--change-test-set", is_flag=True,
              help="Allow new or changed slides in the test split (champion re-scored).")
@click.option("--warm-start", is_flag=True,
              help="Start the challenger from the champion's weights.")
def retrain_command(env: str, project_dir: str, params: str, change_test_set: bool,
                    warm_start: bool) -> None:
    """Retrain on new annotated slides; promote only if truly better."""
    raise SystemExit(_retrain(env, project_dir, params, change_test_set=change_test_set,
                              warm_start=warm_start, detect_only=False))


@cli.command("detect")
@_ENV
@_PROJECT
@click.option("--params", default="", help="Kedro --params (retraining.min_new_images=...).")
@click.option("--change-test-set", is_flag=True, help="As for retrain.")
def detect_command(env: str, project_dir: str, params: str, change_test_set: bool) -> None:
    """Say (one JSON line) whether a retrain would run; changes nothing."""
    raise SystemExit(_retrain(env, project_dir, params, change_test_set=change_test_set,
                              warm_start=False, detect_only=True))


@cli.command("rollback")
@click.option("--model", required=True, help="Registered model, e.g. sa2net-monuseg.")
@click.option("--to-version", required=True, type=int, help="The version to make champion.")
@click.option("--reason", default="", help="Recorded on the version (sa2.rollback_reason).")
@click.option("--force", is_flag=True,
              help="Roll back to a version the promotion gate rejected (recorded on it).")
@click.option("--wait", "wait", type=click.FloatRange(min=0), default=None,
              help="Seconds to wait while a registration (or another rollback) holds the "
                   "store's registry lock; default: one minute.")
def rollback_command(model: str, to_version: int, reason: str, force: bool,
                     wait: float | None) -> None:
    """Make an earlier model version the champion again (one command).

    Exit codes: 0 moved, or already the champion (nothing written); 2 refused (no such
    version, or the gate rejected it and --force was not given; nothing written); 75 the
    registry stayed busy (a registration holds its lock) for the whole wait.
    """
    from sa2_pipeline.tracking.champion import rollback_champion

    require_existing_store("rollback")
    try:
        moved = rollback_champion(model, str(to_version), reason=reason, force=force,
                                  **({} if wait is None else {"lock_wait": wait}))
    except ValueError as err:
        print(f"rollback refused: {err}", file=sys.stderr)
        raise SystemExit(2) from err
    except LockHeldError as err:
        print(f"rollback not done, the registry is busy: {err}. Nothing was changed; run "
              "it again when that finishes, or wait longer with --wait SECONDS.",
              file=sys.stderr)
        raise SystemExit(75) from err
    if not moved["changed"]:
        print(f"{moved['model_name']}: version {moved['to_version']} is already the "
              "champion; nothing changed")
        return
    print(f"{moved['model_name']}: champion moved from version {moved['from_version']} "
          f"to version {moved['to_version']}")
    if moved["forced"]:
        print(f"forced: the promotion gate had rejected version {moved['to_version']}: "
              f"{moved['gate_reason']}")


@cli.command("retrain-report")
@_ENV
@_PROJECT
def retrain_report_command(env: str, project_dir: str) -> None:
    """Print the latest retraining record of the dataset."""
    from sa2_pipeline.pipelines.retraining.request import build_request

    request = build_request(Path(project_dir), env)
    folder = request.project_dir / "data" / "08_reporting" / request.dataset / "retraining"
    latest = folder / "latest.md"
    if not latest.is_file():
        print(f"no retraining record in {folder} yet")
        return
    print(latest.read_text())


def _retrain(env: str, project_dir: str, params: str, *, change_test_set: bool,
             warm_start: bool, detect_only: bool) -> int:
    """Detect, verify, version, retrain, gate and promote (sa2_pipeline.retraining)."""
    from sa2_pipeline.pipelines.retraining.request import build_request
    from sa2_pipeline.retraining.orchestrate import retrain

    request = build_request(Path(project_dir), env, params=params or "",
                            change_test_set=change_test_set or None,
                            detect_only=detect_only, warm_start=warm_start or None)
    outcome = retrain(request)
    if detect_only:
        print(json.dumps({"dataset": request.dataset, "retrain": outcome.retrain,
                          "code": outcome.code, "message": outcome.message}))
    else:
        print(outcome.message)
    return outcome.code


@cli.group("kubeflow")
def kubeflow_group() -> None:
    """Kubeflow Pipelines v2: compile the pipelines, run them locally (docs/kubeflow.md).

    Needs kfp in its own venv (make kfp-venv, or $SA2_KFP_PYTHON)."""


_PIPELINE = click.option("-p", "--pipeline", type=click.Choice(kubeflow.PIPELINES),
                         default="training", show_default=True,
                         help="Which pipeline (docs/kubeflow.md).")
_NUM_PARTS = click.option("--num-parts", type=int, default=0, show_default=True,
                          help="inference: parts (0: the dataset's inference.num_parts).")


def _kubeflow_setting(name: str, *decls: str, help: str):  # noqa: A002 - click's name
    return _setting(KubeflowConfig, name, *decls, help=help)


@kubeflow_group.command("compile")
@_ENV
@_PIPELINE
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The pipeline file (IR YAML) to upload to Kubeflow.")
@_PROJECT
@_NUM_PARTS
@_kubeflow_setting("image", "--image", help="The image every task runs in.")
@_kubeflow_setting("pvc_name", "--pvc", help="The PVC holding data/ (empty: none).")
@_kubeflow_setting("mount_path", "--mount-path", help="Where the PVC is mounted.")
@click.option("--project-dir-in-image", "project_dir_in_image", show_default=True,
              default=_default(KubeflowConfig, "project_dir"),
              help="The project checkout in the image.")
@_kubeflow_setting("cli", "--cli", help="The project's sa2-pipeline in the image.")
@_kubeflow_setting("tracking_uri", "--tracking-uri",
                   help="MLflow tracking URI of the tasks (empty: the image's).")
@_kubeflow_setting("part_retries", "--part-retries", help="Retries of a failed part.")
def kubeflow_compile(env: str, pipeline: str, out: Path, project_dir: str, num_parts: int,
                     **settings: Any) -> None:
    """Write a pipeline's IR YAML for the dataset ENV."""
    settings["project_dir"] = settings.pop("project_dir_in_image")
    result = kubeflow.compile_pipeline(Path(project_dir), env, pipeline, out,
                                       KubeflowConfig(**settings), num_parts)
    print(json.dumps(result))


@kubeflow_group.command("run-local")
@_ENV
@_PIPELINE
@_PROJECT
@_NUM_PARTS
def kubeflow_run_local(env: str, pipeline: str, project_dir: str, num_parts: int) -> None:
    """Run a pipeline with KFP's local runner on this checkout (no cluster, no image)."""
    print(json.dumps(kubeflow.run_local(Path(project_dir), env, pipeline, num_parts)))


@kubeflow_group.command("start-run")
@_ENV
@_PROJECT
def kubeflow_start_run(env: str, project_dir: str) -> None:
    """Task step: create the training pipeline's one MLflow run (prints its id)."""
    print(json.dumps(kubeflow.start_run(Path(project_dir), env)))


@kubeflow_group.command("list-inputs")
@_ENV
@_PROJECT
@_NUM_PARTS
def kubeflow_list_inputs(env: str, project_dir: str, num_parts: int) -> None:
    """Task step: resolve the model to one version and plan the parts (one JSON line)."""
    print(json.dumps(kubeflow.plan_inference(Path(project_dir), env, num_parts)))


@kubeflow_group.command("merge")
@_ENV
@_PROJECT
@click.option("--out-dir", required=True, help="The run's output folder (list-inputs').")
def kubeflow_merge(env: str, project_dir: str, out_dir: str) -> None:
    """Task step: merge the parts' records into run_index.json (fails if one is missing)."""
    print(json.dumps(kubeflow.merge(Path(project_dir), env, out_dir)))


def _database_locked(err: BaseException) -> bool:
    """SQLite's "database is locked" (MLflow's default store, two writers at once),
    raised as ``sqlite3.OperationalError`` or wrapped by SQLAlchemy and MLflow."""
    return "database is locked" in str(err)


def main(argv: list[str] | None = None) -> int:
    """Console entry point ``sa2-pipeline``; returns the exit code.

    A user error (a bad file or setting: :mod:`sa2_pipeline.user_errors`) prints its
    message, not the stack, unless ``--verbose`` or ``SA2_VERBOSE=1``.
    """

    choose_wait_policy()  # before any command imports torch
    bound_http_requests()  # a tracking server that is down fails in bounded time
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        cli.main(args=args, prog_name="sa2-pipeline", standalone_mode=False)
    except SystemExit as exit_:
        if isinstance(exit_.code, str):
            raise
        return int(exit_.code or 0)
    except click.ClickException as err:
        err.show()
        return err.exit_code
    except Exception as err:
        loud = verbose() or bool({"-v", "--verbose"} & set(args))
        if not loud and find_in_chain(err, _database_locked) is not None:
            uri = (os.environ.get("MLFLOW_TRACKING_URI")
                   or "MLflow's default store (MLFLOW_TRACKING_URI is unset)")
            print(f"Error: the MLflow database is busy: another run holds it ({uri}). Retry "
                  "when that run has written, or use an MLflow server (mlflow server) for "
                  "concurrent runs.", file=sys.stderr)
            return 1
        unreachable = unreachable_server(err, os.environ.get("MLFLOW_TRACKING_URI", ""))
        if unreachable and not loud:
            print(f"Error: {unreachable}", file=sys.stderr)
            return 1
        refused = refused_by_server(err, os.environ.get("MLFLOW_TRACKING_URI", ""))
        if refused and not loud:
            print(f"Error: {refused}", file=sys.stderr)
            return EXIT_REFUSED
        user_error = find_user_error(err)
        if user_error is None or verbose() or {"-v", "--verbose"} & set(args):
            raise
        print(f"Error: {user_error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
