"""Project hooks: keep third-party tools offline, and keep one MLflow run per model."""

from __future__ import annotations

import logging
import os
from typing import Any

from kedro.framework.hooks import hook_impl

from sa2_pipeline.config import ConfigError, validate_parameters
from sa2_pipeline.config_files import config_file_error
from sa2_pipeline.locks import LockHeldError, dataset_lock_path, exclusive_lock, held_by_ancestor
from sa2_pipeline.tracking.mlflow_run import end_orphaned_runs, mark_process
from sa2_pipeline.user_errors import UserError, install_excepthook

logger = logging.getLogger(__name__)


class QuietThirdPartyHook:
    """Stop libraries from calling home (no network here, and none needed)."""

    @hook_impl
    def after_context_created(self, context: Any) -> None:  # noqa: ARG002
        os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
        os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")


class ContinueModelRunHook:
    """Evaluation and reporting log into the MLflow run that trained their model.

    ``kedro run`` of the whole project is one MLflow run anyway. When the stages run as
    separate commands (``dvc repro`` runs one ``kedro run --pipelines <stage>`` per stage),
    a pipeline that consumes ``trained_models`` without producing it continues the training
    run recorded in ``training_run`` instead of opening a new, disconnected one. It does so
    by setting ``MLFLOW_RUN_ID``, which ``mlflow.start_run`` (called by kedro-mlflow right
    after this hook) honours; an explicitly set ``MLFLOW_RUN_ID`` is left alone.
    """

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, run_params: dict, pipeline: Any, catalog: Any) -> None:  # noqa: ARG002
        if os.environ.get("MLFLOW_RUN_ID"):
            return
        if "trained_models" not in pipeline.inputs() or "training_run" not in catalog:
            return
        try:
            info = catalog.load("training_run")
        except Exception as err:  # noqa: BLE001 - a missing record only means a new run
            logger.info("no training run recorded (%s); MLflow opens a new run", err)
            return
        run_id = info.get("run_id") if isinstance(info, dict) else None
        if not run_id:
            return
        try:
            from mlflow.tracking import MlflowClient

            run = MlflowClient().get_run(run_id)
            if run.info.lifecycle_stage != "active":
                return
        except Exception as err:  # noqa: BLE001 - run deleted or another tracking store
            logger.info("training run %s not found in this tracking store (%s)", run_id, err)
            return
        changed = changed_params(run.data.params, pipeline, catalog)
        if changed:
            # MLflow never changes a logged param: `--params evaluation.tta=true` after a
            # run that logged false gets a run of its own.
            logger.info("not continuing MLflow run %s, whose logged parameters differ "
                        "from this run's (%s): MLflow opens a new run", run_id,
                        "; ".join(changed[:5]))
            return
        os.environ["MLFLOW_RUN_ID"] = run_id
        logger.info("continuing MLflow run %s of the model being evaluated", run_id)


def changed_params(logged: dict[str, str], pipeline: Any, catalog: Any) -> list[str]:
    """``key: logged -> now`` for each parameter ``pipeline`` reads whose value differs
    from the one already logged (keys flattened with ``.``, as conf/base/mlflow.yml has
    kedro-mlflow log them)."""
    now: dict[str, Any] = {}
    for name in sorted(pipeline.inputs()):
        if name.startswith("params:"):
            _flatten(name.removeprefix("params:"), catalog.load(name), now)
    return [f"{key}: {logged[key]} -> {value}" for key, value in now.items()
            if key in logged and logged[key] != str(value)]


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}", item, out)
    else:
        out[prefix] = value


class RetrainingRunHook:
    """Give the retraining pipeline's node this run's environment and ``--params``.

    ``kedro run --pipelines retraining --env <dataset>`` retrains the environment's dataset
    with the same overrides; a node cannot see either, so this hook puts them in the
    catalog as ``kedro_run`` for pipelines that ask for it.
    """

    @hook_impl
    def before_pipeline_run(self, run_params: dict, pipeline: Any, catalog: Any) -> None:
        if "kedro_run" not in pipeline.inputs():
            return
        catalog["kedro_run"] = {
            "env": run_params.get("env"),
            "project_path": str(run_params.get("project_path")),
            "runtime_params": run_params.get("runtime_params") or {},
        }


class ValidateRunHook:
    """Fail a run in its first second, before any node, on a bad environment or parameter.

    Runs before every other hook (kedro-mlflow's included), so ``--env doesnotexist`` is
    reported as a missing environment, not as an MLflow store error, and a typo in
    ``--params`` or a YAML file (``trainin.epochs=1000``, ``evaluation.overlap=1.5``) stops
    the run before hours of training (:func:`sa2_pipeline.config.validate_parameters`).
    Uncaught user errors print their message without the stack
    (:mod:`sa2_pipeline.user_errors`).
    """

    @hook_impl(tryfirst=True)
    def after_context_created(self, context: Any) -> None:
        from pathlib import Path

        import yaml

        install_excepthook()
        conf = Path(context.config_loader.conf_source)
        if context.env and not (conf / context.env).is_dir():
            envs = sorted(p.name for p in conf.iterdir() if p.is_dir() and p.name != "base")
            raise ConfigError(f"environment {context.env!r} not found: no folder "
                              f"{conf / context.env}; the environments are {envs}")
        try:
            params = context.params
        except yaml.YAMLError as err:
            # Kedro names the file of a syntax error but not its problem, and neither the
            # file nor the key of a duplicate key: say both, with the lines.
            loader = context.config_loader
            problem = config_file_error(conf, [getattr(loader, "base_env", None),
                                               context.env or getattr(loader, "env", None)
                                               or getattr(loader, "default_run_env", None)])
            if problem is None:
                raise
            raise problem from err
        validate_parameters(params)


class DatasetBusyError(UserError):
    """A ``kedro run`` would write a dataset's outputs while a retrain of it holds its lock."""


class DatasetLockHook:
    """A ``kedro run`` that writes a dataset's outputs holds the dataset's lock.

    ``sa2-pipeline retrain`` holds ``data/.locks/retrain-<dataset>.lock`` from detection to
    promotion. A plain ``kedro run`` of the same dataset at that time would rewrite the
    manifest, the model inputs and the models the retrain is training and gating, so it
    takes the same lock and, when a retrain holds it, stops before anything runs (no
    MLflow run is opened) naming the retrain. The retrain's own ``kedro run`` and ``dvc
    repro`` children run under their parent's lock (:func:`sa2_pipeline.locks.held_by_ancestor`).
    ``inference`` writes nothing of the dataset's and ``retraining`` takes the lock in its
    node: neither takes it here.
    """

    NOT_LOCKED = frozenset({"inference", "retraining"})

    def __init__(self) -> None:
        self._dataset: str | None = None
        self._project: str | None = None
        self._held: Any = None

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        try:
            self._dataset = context.config_loader["globals"].get("dataset")
        except Exception:  # noqa: BLE001 - no globals: no dataset to lock
            self._dataset = None
        self._project = str(context.project_path)

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, run_params: dict, pipeline: Any, catalog: Any) -> None:  # noqa: ARG002
        import contextlib

        names = run_params.get("pipeline_names") or [run_params.get("pipeline_name")
                                                     or "__default__"]
        if not self._dataset or set(names) <= self.NOT_LOCKED:
            return
        path = dataset_lock_path(self._project or ".", self._dataset)
        if held_by_ancestor(path):
            return
        stack = contextlib.ExitStack()
        try:
            stack.enter_context(exclusive_lock(path, what=f"kedro run of {self._dataset}"))
        except LockHeldError as err:
            raise DatasetBusyError(
                f"{err}. This kedro run would rewrite {self._dataset}'s outputs while it "
                "works, so it was not started (nothing was written). Run it when the "
                "retrain has finished.") from None
        self._held = stack

    def _release(self) -> None:
        if self._held is not None:
            self._held.close()
            self._held = None

    @hook_impl
    def after_pipeline_run(self, run_params: dict, run_result: Any, pipeline: Any,  # noqa: ARG002
                           catalog: Any) -> None:
        self._release()

    @hook_impl
    def on_pipeline_error(self, error: Exception, run_params: dict, pipeline: Any,  # noqa: ARG002
                          catalog: Any) -> None:
        self._release()


class OrphanedRunHook:
    """A run SIGKILLed before it could end is ended ``KILLED`` by the next ``kedro run``.

    Each run records its process (``sa2.pid``, ``sa2.host``) as it starts; the next run in
    the same experiment on the same host ends the ``RUNNING`` runs whose process is gone
    (:func:`sa2_pipeline.tracking.mlflow_run.end_orphaned_runs`). A run killed after its
    first checkpoint is also linked to the run that resumes it (``MlflowRunContinuation``).
    """

    @hook_impl(trylast=True)  # after kedro-mlflow has started this run
    def before_pipeline_run(self, run_params: dict, pipeline: Any, catalog: Any) -> None:  # noqa: ARG002
        import mlflow

        run = mlflow.active_run()
        if run is None:
            return
        try:
            mark_process(run.info.run_id)
            for run_id in end_orphaned_runs(run.info.experiment_id, run.info.run_id):
                logger.warning("MLflow run %s ended KILLED: its process was killed without "
                               "ending it", run_id)
        except Exception as err:  # noqa: BLE001 - book-keeping must never stop a run
            logger.warning("could not check for MLflow runs left RUNNING: %s", err)


class InterruptedRunHook:
    """A run stopped with Ctrl-C (SIGINT) ends ``KILLED`` in MLflow, not ``FINISHED``.

    kedro-mlflow ends a failed run ``FAILED`` (``on_pipeline_error``), but Kedro calls that
    hook for exceptions only; a ``KeyboardInterrupt`` reaches MLflow's exit handler,
    which ends the active run as ``FINISHED``. This hook notes the interrupt (the signal
    still raises ``KeyboardInterrupt`` as before) and, at exit, before MLflow's handler,
    ends every active run ``KILLED`` -- what a SIGKILLed run is marked when it is found.
    """

    def __init__(self) -> None:
        self.interrupted = False
        self._installed = False

    def _on_sigint(self, signum: int, frame: Any) -> None:
        self.interrupted = True
        if callable(self._previous):
            self._previous(signum, frame)
        else:
            raise KeyboardInterrupt

    def _end_killed(self) -> None:
        if not self.interrupted:
            return
        import mlflow

        while mlflow.active_run() is not None:
            run_id = mlflow.active_run().info.run_id
            mlflow.end_run("KILLED")
            logger.warning("MLflow run %s ended KILLED (interrupted)", run_id)

    @hook_impl
    def before_pipeline_run(self, run_params: dict, pipeline: Any, catalog: Any) -> None:  # noqa: ARG002
        import atexit
        import signal
        import threading

        if self._installed or threading.current_thread() is not threading.main_thread():
            return
        self._previous = signal.getsignal(signal.SIGINT)
        if self._previous == signal.SIG_IGN:  # a background job: Ctrl-C is not for it
            return
        signal.signal(signal.SIGINT, self._on_sigint)
        atexit.register(self._end_killed)  # after MLflow's, so it runs first
        self._installed = True
