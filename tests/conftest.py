"""Shared test configuration."""

import os

import pytest

# Keep torch from fighting other processes for the 2 cores (docs/environment.md), and keep
# tools quiet and offline.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Two test workers share the cores: idle OpenMP threads sleep (the package sets this only
# when the CPU is busy at import, which a worker cannot count on).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# precision auto's measurements are cached per machine (runtime.precision_probe): tests
# write theirs to a throw-away folder, never the user's ~/.cache.
if "SA2_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["SA2_CACHE_DIR"] = tempfile.mkdtemp(prefix="sa2-test-cache-")

# Property-based tests (hypothesis): a fast profile for CI and `make test`, a deep one on
# demand (HYPOTHESIS_PROFILE=deep). No deadline: the 2-core CI machine is shared, so an
# example's run time says nothing about the property.
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "ci", max_examples=10, deadline=None, derandomize=True, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "deep", max_examples=500, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _restore_mlflow_environment():
    """MLflow writes ``MLFLOW_EXPERIMENT_ID`` (and kedro-mlflow ``MLFLOW_RUN_ID``) into
    ``os.environ`` when a test sets an experiment or runs Kedro in-process; a later test's
    subprocess would inherit an id that its own store does not have."""
    import os

    before = {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}
    yield
    for key in [k for k in os.environ if k.startswith("MLFLOW_")]:
        if key not in before:
            del os.environ[key]
    os.environ.update(before)
