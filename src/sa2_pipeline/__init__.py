"""sa2-pipeline: train, evaluate, register and retrain SA2-Net segmentation models.

Importing the package is cheap and changes nothing in the process: heavy modules (torch,
mlflow) are imported inside the functions that need them, and process-wide settings (the
OpenMP wait policy, threads) are made by the entry points -- ``sa2-pipeline``
(:mod:`sa2_pipeline.cli`), every ``kedro`` command (:mod:`sa2_pipeline.kedro_init`,
:mod:`sa2_pipeline.settings`) and the served model (:mod:`sa2_pipeline.tracking.pyfunc`),
through :func:`sa2_pipeline.runtime.threads.choose_wait_policy`.
"""

__version__ = "0.1.0"
