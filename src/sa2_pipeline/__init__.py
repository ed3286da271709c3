"""sa2-pipeline: train, evaluate, register and retrain SA2-Net segmentation models.

Importing the package is cheap: heavy modules (torch, mlflow) are imported inside the
functions that need them. It sets one default before they are: when other processes
keep the CPU busy at import, idle OpenMP threads sleep instead of spinning
(``OMP_WAIT_POLICY=PASSIVE``, unless the environment sets a policy), so a run on a shared
CPU degrades gracefully (:mod:`sa2_pipeline.engine.threads`).
"""

from sa2_pipeline.engine.threads import choose_wait_policy as _choose_wait_policy

_choose_wait_policy()

__version__ = "0.1.0"
