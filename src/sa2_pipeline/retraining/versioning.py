"""Version the raw data with DVC before a retrain.

The raw folder ``data/01_raw/<dataset>`` is a persisted out of the DVC stage
``data_ingestion@<dataset>`` (dvc.yaml). ``dvc repro`` of that stage ingests the new data
and writes the folder's new hash into ``dvc.lock`` (and the files into the DVC cache);
``dvc push`` then copies them to the default remote when one is configured. A dataset that
is not a DVC stage (not listed in ``dvc_datasets.yaml``) is ingested with ``kedro run`` and
versioned by its content digest only.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

logger = logging.getLogger(__name__)


class StageFailedError(RuntimeError):
    """A command of the retrain (``dvc repro``, ``kedro run``...) exited non-zero."""

    def __init__(self, command: Sequence[str], code: int) -> None:
        self.command, self.code = list(command), code
        super().__init__(f"`{' '.join(command)}` exited with {code}")


def tool(name: str) -> str:
    """``name`` from this interpreter's venv when it is there, else from PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else (shutil.which(name) or name)


def subprocess_env() -> dict[str, str]:
    """The environment for child commands: this venv's ``bin`` first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_command(command: Sequence[str], cwd: Path, *, capture: bool = False) -> str:
    """Run ``command`` in ``cwd`` (output to ours unless ``capture``); raise on failure."""
    logger.info("running: %s", " ".join(command))
    proc = subprocess.run(list(command), cwd=cwd, env=subprocess_env(), check=False,
                          stdout=subprocess.PIPE if capture else None, text=True)
    if proc.returncode != 0:
        raise StageFailedError(command, proc.returncode)
    return proc.stdout or ""


def dvc_stage(project_dir: Path, env: str) -> str | None:
    """``data_ingestion@<env>`` when the project is a DVC repository with that stage."""
    if not (project_dir / ".dvc").is_dir() or not (project_dir / "dvc.yaml").is_file():
        return None
    try:
        listed = yaml.safe_load((project_dir / "dvc_datasets.yaml").read_text())["datasets"]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return None
    return f"data_ingestion@{env}" if env in (listed or []) else None


def locked_out_hash(project_dir: Path, stage: str, out: str) -> str | None:
    """The hash ``dvc.lock`` records for ``out`` of ``stage`` (``<md5>.dir`` for a folder)."""
    try:
        lock = yaml.safe_load((project_dir / "dvc.lock").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    for entry in (lock.get("stages", {}).get(stage, {}) or {}).get("outs", []) or []:
        if Path(entry.get("path", "")) == Path(out):
            return entry.get("md5") or entry.get("hash")
    return None


def version_raw_data(project_dir: Path, env: str, raw_dir: str, raw_digest: str) -> dict:
    """Ingest the verified raw data and version it; returns the data-version record.

    Returns:
        ``{"data_version", "raw_digest", "dvc_stage", "dvc_md5", "pushed", "push_error"}``;
        ``data_version`` is ``dvc-<md5>`` under DVC, else ``sha256-<raw content digest>``.
    """
    stage = dvc_stage(project_dir, env)
    record = {"raw_digest": raw_digest, "dvc_stage": stage, "dvc_md5": None,
              "pushed": False, "push_error": None}
    if stage is None:
        logger.warning("%s is not a DVC stage of this project (dvc_datasets.yaml): the raw "
                       "data is versioned by its content digest only", f"data_ingestion@{env}")
        run_command([tool("kedro"), "run", "--pipeline", "data_ingestion", "--env", env],
                    project_dir)
        return {**record, "data_version": f"sha256-{raw_digest[:32]}"}
    run_command([tool("dvc"), "repro", "--single-item", stage], project_dir)
    md5 = locked_out_hash(project_dir, stage, raw_dir)
    record.update(dvc_md5=md5, data_version=f"dvc-{md5}" if md5 else
                  f"sha256-{raw_digest[:32]}")
    remotes = run_command([tool("dvc"), "remote", "list"], project_dir, capture=True).strip()
    if remotes:
        try:
            run_command([tool("dvc"), "push", stage], project_dir)
            record["pushed"] = True
        except StageFailedError as err:  # the version is in the local cache; say so
            logger.warning("dvc push failed (%s): the new data version is only in the local "
                           "DVC cache", err)
            record["push_error"] = str(err)
    return record


#: The DVC stages after ingestion, in order: what a retrain's ``kedro run`` rebuilds.
LATER_STAGES = ("data_processing", "training", "evaluation", "reporting")


def record_stages(project_dir: Path, env: str) -> list[str]:
    """Record the stages a retrain's ``kedro run`` rebuilt in ``dvc.lock`` (``dvc commit``).

    The retrain runs Kedro, not ``dvc repro`` (it hands the run ``--params`` a DVC stage
    cannot take: the data version, the warm start). Committing the stages' current deps,
    params and outs afterwards leaves ``dvc status`` up to date and the outputs in DVC's
    cache. Returns the stages committed (none when the dataset is not a DVC stage).
    """
    if dvc_stage(project_dir, env) is None:
        return []
    stages = [f"{name}@{env}" for name in LATER_STAGES]
    run_command([tool("dvc"), "commit", "--force", "--quiet", *stages], project_dir)
    return stages
