"""Everything that talks to MLflow, one module per role.

- :mod:`.mlflow_run`: the run training and evaluation log into, and its hand-over to
  ``torchrun`` workers;
- :mod:`.training_callbacks`: the engine callbacks that log per-epoch metrics and continue
  a run (the training pipeline hands them to the engine, which runs them like any other
  callback and knows nothing of MLflow);
- :mod:`.mlflow_model`: a model bundle logged as a self-contained pyfunc model
  (signature, input example, pip requirements, usage tags);
- :mod:`.model_versions`: the registry's conventions (aliases, ``sa2.`` tags, the champion
  look-up, the registry lock);
- :mod:`.registration`: creating versions: the locked, resumable gated registration, and
  the import of a release model;
- :mod:`.champion`: the statistical gate run against the champion, the aliases,
  rollback;
- :mod:`.model_loading`: resolving an alias to one version and loading it (predictor,
  pyfunc, the champion's bundle file);
- :mod:`.pyfunc` and :mod:`.pyfunc_model`: the registered, served model.
- :mod:`.serving`: ``mlflow models serve`` in its own process group, stopped as a whole
  (``sa2-pipeline serve``).

This is the only package of the library that imports MLflow (the Kedro edge files
``hooks.py`` and ``settings.py`` aside). MLflow itself is imported inside functions (the
served model's :mod:`.pyfunc` aside), so importing this package stays cheap.
"""

from sa2_pipeline.tracking.mlflow_run import active_run_id, active_run_info

__all__ = ["active_run_id", "active_run_info"]
