"""The one node of the retraining pipeline: run the retraining sequence."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def run_retraining(kedro_run: dict[str, Any]) -> dict[str, Any]:
    """Retrain the environment's dataset (``sa2-pipeline retrain`` does the same).

    Args:
        kedro_run: ``{"env", "project_path", "runtime_params"}`` of this ``kedro run``
            (added to the catalog by ``RetrainingRunHook``).

    Returns:
        ``{"code", "message", "record"}``.

    Raises:
        SystemExit: With the retrain's exit code when it is not 0 (docs/retraining.md).
    """
    from sa2_pipeline.pipelines.retraining.request import build_request, flatten_params
    from sa2_pipeline.retraining.orchestrate import retrain

    request = build_request(Path(kedro_run["project_path"]), kedro_run["env"] or "local",
                            params=flatten_params(kedro_run.get("runtime_params") or {}))
    outcome = retrain(request)
    (logger.info if outcome.code == 0 else logger.error)("%s", outcome.message)
    if outcome.code != 0:
        raise SystemExit(outcome.code)
    return {"code": outcome.code, "message": outcome.message, "record": outcome.record}
