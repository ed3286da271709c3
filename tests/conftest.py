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
# Registry locks of tracking servers live under $XDG_CACHE_HOME (locks.registry_lock_path):
# the tests' go to a throw-away folder too, never the user's ~/.cache.
import tempfile  # noqa: E402

os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="sa2-test-xdg-cache-")

# Property-based tests (hypothesis): a fast profile for CI and `make test`, a deep one on
# demand (HYPOTHESIS_PROFILE=deep). No deadline: the 2-core CI machine is shared, so an
# example's run time says nothing about the property. Hypothesis keeps its files (example
# database, caches) in a throw-away folder, not the checkout's .hypothesis/; failures
# print their reproducing blob.
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY",
                      tempfile.mkdtemp(prefix="sa2-test-hypothesis-"))
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


# MLflow's client-side SQL store puts the artifacts of an experiment created without an
# ``artifact_location`` under ``./mlruns`` of the working directory -- the project folder,
# where pytest runs. MLflow 3.17 (pinned) takes that default from this variable instead
# (the variable its server sets for the same purpose), so every test's artifacts, and
# those of the processes it starts, go under the test's own temporary folder. The session
# check below fails the run if anything lands in the project all the same.
ARTIFACT_ROOT_ENV = "_MLFLOW_SERVER_ARTIFACT_ROOT"


@pytest.fixture(autouse=True)
def _artifacts_in_the_test_s_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(ARTIFACT_ROOT_ENV, str(tmp_path / "mlruns"))


#: What a test run must leave as it found it: the project's own MLflow store and data.
_GUARDED = ("mlruns", "mlflow.db", "mlartifacts", "data")
_REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


def _project_state() -> dict[str, tuple[int, int]]:
    """Every file under the guarded paths: relative path -> (size, mtime in ns)."""
    state = {}
    for name in _GUARDED:
        root = _REPO / name
        paths = [root] if root.is_file() else (root.rglob("*") if root.is_dir() else [])
        for path in paths:
            if path.is_file():
                stat = path.stat()
                state[str(path.relative_to(_REPO))] = (stat.st_size, stat.st_mtime_ns)
    return state


def pytest_sessionstart(session):
    if not hasattr(session.config, "workerinput"):  # the controller (or a plain run)
        session.config._sa2_project_state = _project_state()


def pytest_sessionfinish(session, exitstatus):
    before = getattr(session.config, "_sa2_project_state", None)
    if before is None:
        return
    after = _project_state()
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    if changed:
        shown = "\n  ".join(changed[:20]) + ("\n  ..." if len(changed) > 20 else "")
        print(f"\nThe test run changed {len(changed)} file(s) in the project folder "
              f"(tests must write under their own temporary folders):\n  {shown}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
