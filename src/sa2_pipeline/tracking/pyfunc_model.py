"""MLflow "models from code" entry: MLflow runs this file when it loads the model.

Logging a path rather than a pickled object means the registered model depends only on
the source bundled with it (``code_paths``), never on a pickle of this environment.
"""

from sa2_pipeline.runtime.threads import choose_wait_policy

choose_wait_policy()  # the served model's process: before the model imports torch

from sa2_pipeline.tracking.pyfunc import _set_model_from_code  # noqa: E402

_set_model_from_code()
