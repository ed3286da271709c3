"""sa2-pipeline: train, evaluate, register and retrain SA2-Net segmentation models.

Importing the package is cheap: heavy modules (torch, mlflow) are imported inside the
functions that need them. It sets one default before they are: OpenMP threads sleep
instead of spinning when idle (``OMP_WAIT_POLICY=PASSIVE`` unless already set), so a
run on a shared CPU degrades gracefully (:mod:`sa2_pipeline.engine.threads`).
"""

from sa2_pipeline.engine.threads import prefer_passive_wait as _prefer_passive_wait

_prefer_passive_wait()

__version__ = "0.1.0"
