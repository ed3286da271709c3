"""Shared test configuration."""

import os

# Keep torch from fighting other processes for the 2 cores (docs/environment.md), and keep
# tools quiet and offline.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
