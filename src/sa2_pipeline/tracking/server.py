"""Talking to a tracking server that may be down: bounded waits and a message that says so.

MLflow's own defaults retry a failed HTTP request 7 times with exponential back-off and
wait 120 s for each answer, so a refused port kept ``sa2-pipeline rollback`` busy for about
4 minutes and a server that never answers for over 5, after which the error named the
wrong cause. The entry points (``sa2-pipeline``, every ``kedro`` run) call
:func:`bound_http_requests` first; a user's own ``MLFLOW_HTTP_REQUEST_*`` settings win.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from sa2_pipeline.io_utils import redact_uri
from sa2_pipeline.user_errors import UserError

#: The project's defaults for MLflow's HTTP client (docs/environment.md, "Tracking server").
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",       # seconds to wait for one answer
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",    # then give up (3 attempts in all)
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",  # 1 s, then 2 s between attempts
}


def bound_http_requests(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Set :data:`HTTP_DEFAULTS` where the environment sets nothing; returns what was set.

    Worst case with these: a refused connection fails in a few seconds, a server that
    never answers in about 3 x 30 s + 3 s.
    """
    env = os.environ if environ is None else environ
    chosen = {k: v for k, v in HTTP_DEFAULTS.items() if k not in env}
    env.update(chosen)
    return chosen


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def unreachable_server(exc: BaseException, tracking_uri: str) -> str | None:
    """A one-line message when ``exc`` is (or wraps) a failure to reach ``tracking_uri``
    over HTTP; ``None`` for any other error."""
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    markers = ("Max retries exceeded", "Connection refused", "Read timed out",
               "Failed to establish a new connection", "ConnectTimeout", "ReadTimeout")
    for error in _chain(exc):
        text = f"{type(error).__name__}: {error}"
        if any(marker in text for marker in markers):
            timeout = os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", "?")
            retries = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "?")
            return (f"the MLflow tracking server at {redact_uri(tracking_uri)} did not answer "
                    f"({timeout} s per request, {retries} retries): is it running and is "
                    f"MLFLOW_TRACKING_URI right? Nothing was changed in the registry.")
    return None


#: Exit code of a command the tracking server refused (no permission): EX_NOPERM.
EXIT_REFUSED = 77


def refused_by_server(exc: BaseException, tracking_uri: str) -> str | None:
    """A one-line message when ``exc`` is (or wraps) the tracking server refusing the
    request: not authenticated (401), or the user lacks the permission (403, MLflow's
    basic-auth app). Names the user, never the password; ``None`` for any other error."""
    for error in _chain(exc):
        code = getattr(error, "error_code", None)
        text = str(error)
        if code in ("PERMISSION_DENIED", "UNAUTHENTICATED") or "error code 403" in text \
                or "error code 401" in text:
            user = os.environ.get("MLFLOW_TRACKING_USERNAME")
            who = (f"user {user!r}" if user else
                   "no user (set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD)")
            unauthenticated = code == "UNAUTHENTICATED" or "error code 401" in text
            what = ("did not accept the credentials of" if unauthenticated else
                    "refused the request: it lacks the permission, for")
            endpoint = text.split(" failed with", 1)[0].removeprefix("API request to endpoint ")
            return (f"the MLflow tracking server at {redact_uri(tracking_uri)} {what} {who} "
                    f"({endpoint[:120]}). An admin grants it (docs/retraining.md, \"Team mode\"). "
                    "Nothing more was written.")
    return None


class NoTrackingStoreError(UserError):
    """A command that reads the registry found no tracking store to read."""


def require_existing_store(command: str) -> None:
    """Refuse when no ``MLFLOW_TRACKING_URI`` is set and the default store (``mlflow.db``
    in the working folder) does not exist: the command would create an empty store there
    and then report that the model has no such version.

    Raises:
        NoTrackingStoreError: Names the folder and what to do.
    """
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return
    here = Path.cwd()
    if not (here / "mlflow.db").is_file():
        raise NoTrackingStoreError(
            f"{command}: no MLflow tracking store here ({here / 'mlflow.db'} does not exist "
            "and MLFLOW_TRACKING_URI is not set): run it in the project folder, or set "
            "MLFLOW_TRACKING_URI to the team's server or database; nothing was created")
