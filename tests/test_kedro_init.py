"""The ``kedro.init`` hook drops MLflow's warning about kedro-mlflow's class, nothing else.

That ``kedro run`` itself no longer prints it is checked in
``test_startup_validation.py::test_kedro_run_with_bad_params_fails_before_any_node``.
"""

from __future__ import annotations

import warnings
from importlib.metadata import entry_points

from sa2_pipeline import kedro_init


def test_the_hook_is_registered_for_kedro() -> None:
    hooks = {ep.name: ep.value for ep in entry_points(group="kedro.init")}
    assert hooks.get("sa2_pipeline") == "sa2_pipeline.kedro_init:on_kedro_start"


def test_only_the_type_hint_warning_is_dropped() -> None:
    seen: list[str] = []
    previous = warnings.showwarning
    warnings.showwarning = lambda message, *args, **kwargs: seen.append(str(message))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            with kedro_init._drop_warning(kedro_init.FOREIGN_TYPE_HINT_WARNING):
                # the way MLflow raises it: under its own "once" filter
                with warnings.catch_warnings():
                    warnings.simplefilter("once", category=UserWarning)
                    warnings.warn("\x1b[33mAdd type hints to the `predict` method to enable "
                                  "data validation\x1b[0m", UserWarning, stacklevel=1)
                warnings.warn("a warning of our own", UserWarning, stacklevel=1)
            warnings.warn("Add type hints to the `predict` method, after the import",
                          UserWarning, stacklevel=1)
    finally:
        warnings.showwarning = previous
    assert seen == ["a warning of our own",
                    "Add type hints to the `predict` method, after the import"]
