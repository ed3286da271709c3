"""Kept only for models registered before the MLflow code moved to ``sa2_pipeline.tracking``.

Such a model's entry file runs ``from sa2_pipeline.inference.pyfunc import
_set_model_from_code``. In a fresh process it finds this module in the model's own copy
of the package; in a process that already imported the current package (``sa2-pipeline
segment``, re-scoring an old champion during ``kedro run``) it finds this one, which
forwards to :mod:`sa2_pipeline.tracking.pyfunc`. New models never use it.
"""

from __future__ import annotations


def _set_model_from_code() -> None:
    from sa2_pipeline.tracking.pyfunc import _set_model_from_code as set_model

    set_model()
