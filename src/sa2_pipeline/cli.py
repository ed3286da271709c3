"""``sa2-pipeline``: thin command-line entry points over the library (no Kedro needed).

    sa2-pipeline import-release CHECKPOINT --dataset monuseg   # release weights -> registry
    sa2-pipeline segment SLIDES_OR_FOLDERS... --model models:/sa2net-synthetic@champion --out masks/
    sa2-pipeline make-synthetic-data data/01_raw/synthetic     # the embedded dataset
    sa2-pipeline retrain --env monuseg      # retrain on new slides, gated promotion
    sa2-pipeline rollback --model sa2net-monuseg --to-version 3

The pipelines themselves run with ``kedro run``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

logger = logging.getLogger("sa2_pipeline.cli")


def _import_release(args: argparse.Namespace) -> int:
    """Import a release checkpoint as a registered MLflow model version."""
    from sa2_pipeline.models.bundle import make_bundle
    from sa2_pipeline.models.sa2net import load_official_checkpoint
    from sa2_pipeline.tracking.registry import register_release

    path = Path(args.checkpoint)
    if not path.is_file():
        raise SystemExit(f"{path}: no such checkpoint file")
    model = load_official_checkpoint(path, weights_only=not args.trust)
    bundle = make_bundle(
        model_name="sa2net",
        init_kwargs=model.init_kwargs,
        state_dict={k: v.detach().cpu() for k, v in model.state_dict().items()},
        channel_order="bgr",  # the release reads images with OpenCV: BGR in [0, 1]
        patch_size=args.resize_to,
        resize_to=args.resize_to,
        metadata={"source": "release checkpoint", "checkpoint": path.name},
    )
    name = args.model_name or f"sa2net-{args.dataset}"
    record = register_release(
        bundle,
        model_name=name,
        experiment=f"sa2-{args.dataset}",
        run_name=f"import {path.name}",
        run_tags={"source": "release checkpoint", "checkpoint": path.name},
        params={"model.name": "sa2net",
                **{f"model.{k}": v for k, v in model.init_kwargs.items()},
                "input.channel_order": "bgr", "input.resize_to": args.resize_to},
        alias=args.alias,
    )
    print(f"registered {name} version {record['version']} (alias '{args.alias}', run "
          f"{record['run_id']}): load it with mlflow.pyfunc.load_model('models:/{name}@"
          f"{args.alias}')")
    return 0


def _segment(args: argparse.Namespace) -> int:
    """Segment files, folders and globs with a registered model (docs/inference.md)."""
    from sa2_pipeline.config import ConfigError, InferenceConfig
    from sa2_pipeline.engine.threads import configure_threads
    from sa2_pipeline.inference.run import collect_inputs, run_folder

    try:
        configure_threads(args.threads)
        inputs = collect_inputs(args.images)
        cfg = InferenceConfig(
            model_uri=args.model, output_dir=args.out, threshold=args.threshold, tta=args.tta,
            overlap=args.overlap, batch_size=args.batch_size, precision=args.precision,
            patch_size=args.patch_size, skip_background=not args.all_tiles,
            model_mpp=args.model_mpp, device=args.device, progress=not args.no_progress)
        summary = run_folder(cfg, default_model_uri=args.model, inputs=inputs,
                             out_dir=Path(args.out))
    except (ConfigError, ValueError, FileNotFoundError) as err:
        raise SystemExit(f"segment: {err}") from err
    for name, reason in summary["failed"].items():
        print(f"{name}: {reason}", file=sys.stderr)
    print(f"segmented {len(summary['done'])} input(s) into {args.out} with "
          f"{summary['model']['uri']}; {len(summary['skipped'])} already done, "
          f"{len(summary['failed'])} failed")
    return min(len(summary["failed"]), 100)


def _make_synthetic(args: argparse.Namespace) -> int:
    from sa2_pipeline.datasets.synthetic import ensure_synthetic_monuseg

    made = ensure_synthetic_monuseg(Path(args.out), n_train=args.n_train, n_test=args.n_test,
                                    image_size=args.image_size, seed=args.seed)
    print(f"{'generated' if made else 'kept existing data in'} {args.out}")
    return 0


# Click, because Kedro imports ``<package>.cli`` and merges its ``cli`` group into the
# ``kedro`` command: the same commands work as ``sa2-pipeline <cmd>`` and ``kedro <cmd>``.
import click  # noqa: E402


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
def import_release(**kwargs) -> None:
    """Register a release checkpoint in MLflow (BGR, [0, 1], resized input)."""
    raise SystemExit(_import_release(argparse.Namespace(**kwargs)))


@cli.command("segment")
@click.argument("images", nargs=-1, required=True)
@click.option("--model", required=True, help="e.g. models:/sa2net-monuseg@champion")
@click.option("--out", required=True, help="Folder for the masks, overlays and CSVs.")
@click.option("--threshold", type=float, default=0.5, show_default=True)
@click.option("--tta", is_flag=True, help="Test-time augmentation (8 D4 transforms).")
@click.option("--overlap", type=float, default=0.5, show_default=True)
@click.option("--batch-size", type=int, default=8, show_default=True, help="Tiles per pass.")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16", "auto"]),
              default="fp32", show_default=True)
@click.option("--patch-size", type=int, default=None, help="Tile side (default: the model's).")
@click.option("--model-mpp", type=float, default=None,
              help="Training pixel size, um/px (default: the model's sa2.pixel_size_um tag).")
@click.option("--all-tiles", is_flag=True, help="Do not skip background tiles.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True)
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@click.option("--threads", type=int, default=0, show_default=True,
              help="torch CPU threads; 0 = automatic (free cores, or $SA2_NUM_THREADS).")
def segment(**kwargs) -> None:
    """Segment images and whole slides (files, folders, globs) with a registered model."""
    raise SystemExit(_segment(argparse.Namespace(**kwargs)))


@cli.command("make-synthetic-data")
@click.argument("out")
@click.option("--n-train", type=int, default=24, show_default=True)
@click.option("--n-test", type=int, default=8, show_default=True)
@click.option("--image-size", type=int, default=256, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def make_synthetic_data(**kwargs) -> None:
    """Write the embedded synthetic dataset (a folder holding any file is kept)."""
    raise SystemExit(_make_synthetic(argparse.Namespace(**kwargs)))


_RETRAIN_EPILOG = """Exit codes: 0 retrained (promoted or not) or nothing to do; 1 a step
failed (champion unchanged; rerun to resume); 3 a raw file failed verification (nothing
written); 4 the change touches the frozen test set (see --change-test-set); 75 another
retrain of this dataset holds its lock."""

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
def retrain_command(**kwargs) -> None:
    """Retrain on new annotated slides; promote only if truly better."""
    raise SystemExit(_retrain(argparse.Namespace(detect_only=False, **kwargs)))


@cli.command("detect")
@_ENV
@_PROJECT
@click.option("--params", default="", help="Kedro --params (retraining.min_new_images=...).")
@click.option("--change-test-set", is_flag=True, help="As for retrain.")
def detect_command(**kwargs) -> None:
    """Say (one JSON line) whether a retrain would run; changes nothing."""
    raise SystemExit(_retrain(argparse.Namespace(detect_only=True, warm_start=False,
                                                 **kwargs)))


@cli.command("rollback")
@click.option("--model", required=True, help="Registered model, e.g. sa2net-monuseg.")
@click.option("--to-version", required=True, type=int, help="The version to make champion.")
@click.option("--reason", default="", help="Recorded on the version (sa2.rollback_reason).")
def rollback_command(**kwargs) -> None:
    """Make an earlier model version the champion again (one command)."""
    raise SystemExit(_rollback(argparse.Namespace(**kwargs)))


@cli.command("retrain-report")
@_ENV
@_PROJECT
def retrain_report_command(**kwargs) -> None:
    """Print the latest retraining record of the dataset."""
    raise SystemExit(_retrain_report(argparse.Namespace(**kwargs)))


def _retrain(args: argparse.Namespace) -> int:
    """Detect, verify, version, retrain, gate and promote (sa2_pipeline.retraining)."""
    from sa2_pipeline.pipelines.retraining.config import build_request
    from sa2_pipeline.retraining.orchestrate import retrain

    request = build_request(Path(args.project_dir), args.env, params=args.params or "",
                            change_test_set=args.change_test_set or None,
                            detect_only=args.detect_only,
                            warm_start=args.warm_start or None)
    outcome = retrain(request)
    if args.detect_only:
        print(json.dumps({"dataset": request.dataset, "retrain": outcome.retrain,
                          "code": outcome.code, "message": outcome.message}))
    else:
        print(outcome.message)
    return outcome.code


def _rollback(args: argparse.Namespace) -> int:
    """Move the champion alias back to an earlier version."""
    from sa2_pipeline.tracking.registration import rollback_champion

    try:
        moved = rollback_champion(args.model, str(args.to_version), reason=args.reason)
    except ValueError as err:
        print(f"rollback refused: {err}", file=sys.stderr)
        return 2
    print(f"{moved['model_name']}: champion moved from version {moved['from_version']} "
          f"to version {moved['to_version']}")
    return 0


def _retrain_report(args: argparse.Namespace) -> int:
    """Print the dataset's latest retraining record."""
    from sa2_pipeline.pipelines.retraining.config import build_request

    request = build_request(Path(args.project_dir), args.env)
    folder = request.project_dir / "data" / "08_reporting" / request.dataset / "retraining"
    latest = folder / "latest.md"
    if not latest.is_file():
        print(f"no retraining record in {folder} yet")
        return 0
    print(latest.read_text())
    return 0






def main(argv: list[str] | None = None) -> int:
    """Console entry point ``sa2-pipeline``; returns the exit code.

    A user error (a bad file or setting: :mod:`sa2_pipeline.user_errors`) prints its
    message, not the stack, unless ``--verbose`` or ``SA2_VERBOSE=1``.
    """
    from sa2_pipeline.user_errors import find_user_error, verbose

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
        user_error = find_user_error(err)
        if user_error is None or verbose() or {"-v", "--verbose"} & set(args):
            raise
        print(f"Error: {user_error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
