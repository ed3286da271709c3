"""Kedro project settings (https://docs.kedro.org/en/stable/kedro_project_setup/settings.html)."""

import os

from sa2_pipeline.runtime.threads import choose_wait_policy
from sa2_pipeline.tracking.server import bound_http_requests

# A session created in-process (KedroSession.create, not the kedro command) reaches the
# project here first: choose the OpenMP wait policy before anything imports torch.
choose_wait_policy()
bound_http_requests()  # a tracking server that is down fails in bounded time

from kedro.config import OmegaConfigLoader  # noqa: E402

from sa2_pipeline.hooks import (  # noqa: E402
    ContinueModelRunHook,
    DatasetLockHook,
    InterruptedRunHook,
    OrphanedRunHook,
    QuietThirdPartyHook,
    RetrainingRunHook,
    ValidateRunHook,
)

# kedro-mlflow's MlflowHook is registered by its plugin entry point.
HOOKS = (ValidateRunHook(), QuietThirdPartyHook(), ContinueModelRunHook(), RetrainingRunHook(),
         InterruptedRunHook(), OrphanedRunHook(), DatasetLockHook())

# Kedro telemetry and albumentations' update check both try the network.
DISABLE_HOOKS_FOR_PLUGINS = ("kedro-telemetry",)


def _env(key: str, default: str | None = None) -> str | None:
    """``${sa2.env:NAME,default}``: environment variables in any config file.

    Kedro only allows ``oc.env`` in credentials; the tracking URI must also be
    overridable by ``MLFLOW_TRACKING_URI`` (docs/architecture.md), so mlflow.yml uses this.
    """
    return os.environ.get(key, default)


CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "custom_resolvers": {"sa2.env": _env},
    # conf/<env>/ overrides only the keys it names (e.g. training.epochs) instead of
    # replacing a whole parameter group.
    "merge_strategy": {"parameters": "soft", "globals": "soft", "mlflow": "soft"},
    "config_patterns": {
        "mlflow": ["mlflow*", "mlflow*/**", "**/mlflow*"],
    },
}
