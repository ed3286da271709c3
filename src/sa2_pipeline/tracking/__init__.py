"""Everything that talks to MLflow: the run, the training callbacks, the registry, the pyfunc.

This is the only package of the library that imports MLflow (the Kedro edge files
``hooks.py`` and ``settings.py`` aside). The training engine knows nothing of it: the
training pipeline hands the callbacks of :mod:`sa2_pipeline.tracking.callbacks` to the
engine, which runs them like any other callback. MLflow itself is imported inside
functions, so importing this package stays cheap.
"""

from sa2_pipeline.tracking.run import active_run_id, active_run_info

__all__ = ["active_run_id", "active_run_info"]
