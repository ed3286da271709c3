"""sa2-pipeline: train, evaluate, register and retrain SA2-Net segmentation models.

Importing the package is cheap: heavy modules (torch, mlflow) are imported inside the
functions that need them.
"""

__version__ = "0.1.0"
