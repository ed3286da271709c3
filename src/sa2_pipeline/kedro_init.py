"""Runs when any ``kedro`` command starts, before plugins and project code are imported.

Registered as a ``kedro.init`` entry point (pyproject.toml). Kedro calls every such hook
first thing in ``kedro.framework.cli.main``, so this is the one place the project can act
before kedro-mlflow's CLI plugin is imported.
"""

from __future__ import annotations

import contextlib
import importlib
import warnings

from sa2_pipeline.runtime.threads import choose_wait_policy

# MLflow 3 warns when a ``PythonModel`` subclass has no type hints on ``predict``.
# kedro-mlflow's ``KedroPipelineModel`` is such a class; it is defined when kedro-mlflow's
# CLI plugin or hook loads, i.e. at the start of every ``kedro`` command, although this
# project never logs it (its own model class skips the check on purpose). The warning
# says nothing about this project, so it is dropped for that one import and that one
# message; every other warning is kept.
FOREIGN_TYPE_HINT_WARNING = "Add type hints to the `predict` method"
FOREIGN_MODULE = "kedro_mlflow.mlflow"


@contextlib.contextmanager
def _drop_warning(text: str):
    """Do not show warnings whose message contains ``text`` (others pass through).

    A filter cannot do this: MLflow raises the warning under its own
    ``catch_warnings(); simplefilter("once")``, which takes precedence over any filter
    installed outside it. ``showwarning`` is the hook that context leaves in place.
    """
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if text not in str(message):
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown


def on_kedro_start() -> None:
    """The ``kedro.init`` hook: choose the OpenMP wait policy before anything imports
    torch (:func:`sa2_pipeline.runtime.threads.choose_wait_policy`), then import
    kedro-mlflow's model class quietly (:func:`quiet_foreign_warnings`)."""

    choose_wait_policy()
    quiet_foreign_warnings()


def quiet_foreign_warnings() -> None:
    """Import kedro-mlflow's model class without MLflow's type-hint warning about it.

    kedro-mlflow's plugin imports the same module moments later, so importing it here
    first adds no start-up time; the plugin then finds it in ``sys.modules``.
    """
    with _drop_warning(FOREIGN_TYPE_HINT_WARNING), contextlib.suppress(ImportError):
        importlib.import_module(FOREIGN_MODULE)
