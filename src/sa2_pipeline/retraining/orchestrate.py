"""``sa2-pipeline retrain``: the whole retraining sequence for one dataset.

0. a retrain exists to gate a challenger: with ``registry.register`` false it refuses
   at once (:data:`EXIT_BAD_SETTING`), before the lock, detection or any write, so the
   slides stay new (``detect`` alone is allowed);
1. take the dataset's lock (another retrain: exit :data:`EXIT_LOCK_HELD` at once);
2. detect new or changed annotated slides (:mod:`.detect`); nothing new: exit 0 without
   opening an MLflow run; fewer than ``retraining.min_new_images``: exit 0 too;
3. the adapter has verified every raw file by then: a bad one stops here
   (:data:`EXIT_BAD_DATA`), with nothing written;
4. the frozen test set: a change that touches a test image needs ``change_test_set``
   (:data:`EXIT_TEST_SET_CHANGED` otherwise); its reference is kept outside DVC's
   outputs (``retraining/frozen_test_set.json``), so a ``dvc repro`` killed after deleting
   the manifest does not switch this check off; a near-copy of a test image offered as
   training data is refused like a bad file (:data:`EXIT_BAD_DATA`);
5. version the raw data (:mod:`.versioning`: ``dvc repro data_ingestion@<env>``, push);
6. ``kedro run --pipelines data_processing,training,evaluation --env <env>`` trains the
   challenger (resumable), evaluates it on the frozen test set and registers it; the
   registry's statistical gate decides on ``champion``;
7. the retraining record (:mod:`.record`), the report rebuilt with it, and the stages
   the run changed recorded in ``dvc.lock`` (``dvc commit``), so ``dvc status`` is up to
   date afterwards and a ``dvc repro`` does not rebuild (or undo) them.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sa2_pipeline.locks import LockHeldError, advertised, dataset_lock_path, exclusive_lock
from sa2_pipeline.retraining.detect import (
    Detection,
    detect_changes,
    write_inventory,
    write_test_reference,
)
from sa2_pipeline.retraining.record import write_record
from sa2_pipeline.retraining.versioning import (
    LATER_STAGES,
    StageFailedError,
    record_stages,
    run_command,
    tool,
    version_raw_data,
)
from sa2_pipeline.tracking.model_loading import champion_bundle_file, resolve_model

logger = logging.getLogger(__name__)

#: Exit codes of ``sa2-pipeline retrain`` (docs/retraining.md).
EXIT_OK = 0              # retrained (promoted or not), or nothing to do
EXIT_FAILED = 1          # a step failed (the message says which); the champion is unchanged
EXIT_BAD_SETTING = 1     # a setting rules the retrain out (registry.register false); nothing done
EXIT_BAD_DATA = 3        # a new or changed raw file failed verification; nothing written
EXIT_TEST_SET_CHANGED = 4  # the change touches the frozen test set; needs --change-test-set
EXIT_LOCK_HELD = 75      # another retrain of this dataset holds the lock (EX_TEMPFAIL)


@dataclass(frozen=True)
class RetrainRequest:
    """Everything one retrain needs (the CLI and the Kedro node build it)."""

    project_dir: Path
    env: str
    dataset: str
    raw_dir: str
    build_manifest: Callable[[], Any] = field(repr=False)
    #: Called first: writes the embedded synthetic data into an empty raw folder.
    prepare_raw: Callable[[], None] | None = field(default=None, repr=False)
    min_new_images: int = 1
    change_test_set: bool = False
    warm_start: bool = False
    #: Registered model (``registry.model_name``): the champion to warm-start from.
    model_name: str = ""
    #: Kedro ``--params`` for the training run (``"training.epochs=2,..."``), or "".
    params: str = ""
    detect_only: bool = False
    #: ``registry.register`` of the run (config + ``params``): a retrain needs it true.
    register: bool = True


@dataclass(frozen=True)
class RetrainOutcome:
    code: int
    message: str
    record: dict[str, Any] | None = None
    retrain: bool = False


def _paths(req: RetrainRequest) -> dict[str, Path]:
    root = req.project_dir / "data"
    return {
        "manifest": root / "02_intermediate" / req.dataset / "manifest.csv",
        "inventory": root / "02_intermediate" / req.dataset / "raw_inventory.json",
        "registration": root / "08_reporting" / req.dataset / "model_registration.json",
        "summary": root / "08_reporting" / req.dataset / "test_summary.json",
        "reports": root / "08_reporting" / req.dataset,
        "records": root / "08_reporting" / req.dataset / "retraining",
        "pending": root / "08_reporting" / req.dataset / "retraining" / "pending.json",
        # Not an output of any DVC stage: `dvc repro` never deletes it (detect.py).
        "test_reference": root / "08_reporting" / req.dataset / "retraining"
        / "frozen_test_set.json",
    }


def retrain(req: RetrainRequest) -> RetrainOutcome:
    """Run the sequence; never raises for the expected failures (see the exit codes)."""
    from sa2_pipeline.datasets.schema import DatasetValidationError

    refused = _refusal(req)
    if refused is not None:
        return refused
    lock = dataset_lock_path(req.project_dir, req.dataset)
    try:
        with exclusive_lock(lock, what=f"retrain of {req.dataset}"), advertised(lock):
            return _locked(req)
    except LockHeldError as err:
        return RetrainOutcome(EXIT_LOCK_HELD, str(err))
    except DatasetValidationError as err:
        return RetrainOutcome(EXIT_BAD_DATA, f"verification failed, nothing was written and "
                              f"the current data version is kept:\n{err}")
    except StageFailedError as err:
        unreadable = _unreadable_champion(req)
        if unreadable is not None:
            return RetrainOutcome(EXIT_FAILED, f"{err}; {unreadable}")
        return RetrainOutcome(EXIT_FAILED, f"{err}; the champion is unchanged. Run the same "
                              "command again to resume (finished epochs are kept).")


def _unreadable_champion(req: RetrainRequest) -> str | None:
    """Why the champion cannot be re-scored (its artifacts cannot be downloaded), or None.

    Asked only after a step failed: a champion whose artifacts are gone fails every
    retrain's gate the same way, so "run it again" would never help.
    """
    if not req.model_name or not (os.environ.get("MLFLOW_TRACKING_URI")
                                  or (Path.cwd() / "mlflow.db").is_file()):
        return None  # no store to ask: never create an empty one by looking
    try:
        champion = resolve_model(f"models:/{req.model_name}@champion")
    except Exception:  # noqa: BLE001 - no champion, store unreachable: not a diagnosis
        return None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            champion_bundle_file(req.model_name, tmp)
        except Exception as err:  # noqa: BLE001 - MLflow and the stores raise many types
            return (
                f"the champion, {req.model_name} version {champion.version}, cannot be read "
                f"({type(err).__name__}: {str(err)[:300]}): its artifacts are missing, and "
                "every retrain re-scores the champion on the test set, so running the same "
                "command again fails the same way. The champion is unchanged. Restore that "
                "version's artifacts, or make a version whose artifacts exist champion: "
                f"`sa2-pipeline rollback --model {req.model_name} --to-version <N> --reason "
                f"\"v{champion.version} artifacts missing\"` (add --force for a version the "
                "gate rejected), then run the same command again to resume")
    return None


def _refusal(req: RetrainRequest) -> RetrainOutcome | None:
    """The outcome of a retrain its settings rule out, before anything runs; else None."""
    if req.detect_only or req.register:
        return None
    return RetrainOutcome(
        EXIT_BAD_SETTING,
        f"retrain of {req.dataset} refused: registry.register is false (conf/{req.env} or "
        "--params), so no challenger would be registered and gated against the champion. "
        "Nothing was run and the new slides stay new; set registry.register=true to "
        "retrain, or use `kedro run` to train without registering")


def _locked(req: RetrainRequest) -> RetrainOutcome:
    started = datetime.now(UTC).isoformat(timespec="seconds")
    paths = _paths(req)
    if req.prepare_raw is not None:
        req.prepare_raw()
    detection = detect_changes(req.raw_dir if Path(req.raw_dir).is_absolute()
                               else req.project_dir / req.raw_dir,
                               paths["manifest"], paths["inventory"], req.build_manifest,
                               paths["test_reference"])
    if detection.test_reference_missing and not req.change_test_set:
        return RetrainOutcome(
            EXIT_FAILED,
            f"the frozen test set of {req.dataset} is unknown: {paths['manifest']} is "
            "missing (a `dvc repro` killed after deleting its outputs?) and there is no "
            f"reference {paths['test_reference']}, so a change to a test image could not "
            "be told apart. Nothing was done. Restore the last ingested manifest (`dvc "
            f"checkout data_ingestion@{req.env}`) and run the same command again, or pass "
            "--change-test-set to accept whatever test split the raw folder has now")
    pending = _read_pending(paths["pending"])
    if pending is not None:  # an earlier retrain was interrupted: finish it
        detection = _with_pending(detection, pending)
        logger.warning("resuming the retrain interrupted at %s", pending.get("started"))
    changes = detection.changes
    if changes.nothing_new:
        how = "unchanged inventory" if detection.fast_path else "verified, same content"
        return RetrainOutcome(EXIT_OK, f"nothing new in {req.raw_dir} ({len(detection.inventory)} "
                              f"files, {how}): no retraining, no MLflow run")
    summary = (f"{len(changes.new)} new, {len(changes.changed)} changed, "
               f"{len(changes.removed)} removed image(s) in {req.raw_dir}")
    if changes.n_new_images < req.min_new_images and not changes.removed:
        return RetrainOutcome(EXIT_OK, f"{summary}: fewer than retraining.min_new_images = "
                              f"{req.min_new_images}; waiting for more")
    if changes.test_affected and not req.change_test_set:
        return RetrainOutcome(
            EXIT_TEST_SET_CHANGED,
            f"{summary}: the frozen test set would change ({list(changes.test_affected)[:10]}); "
            "new slides join training only. Move them to the training folder, or pass "
            "--change-test-set (the champion is then re-scored on the new test set)")
    if req.detect_only:
        return RetrainOutcome(EXIT_OK, f"{summary}: a retrain would run", retrain=True)
    return _retrain(req, detection, summary, started, paths)


def _retrain(req: RetrainRequest, detection: Detection, summary: str, started: str,
             paths: dict[str, Path]) -> RetrainOutcome:
    logger.info("%s: retraining", summary)
    _write_json(paths["pending"], {"started": started, "changes": detection.changes.as_dict()})
    data = version_raw_data(req.project_dir, req.env, req.raw_dir, detection.raw_digest)
    write_inventory(paths["inventory"], detection.inventory, paths["manifest"])
    for stale in (paths["registration"],):  # never read a previous run's result
        stale.unlink(missing_ok=True)
    params = [p for p in (req.params, f"registry.data_version={data['data_version']}",
                          _warm_start_param(req)) if p]
    # Ingestion was just versioned (above); the report is built once the record exists.
    run_command([tool("kedro"), "run", "--pipelines", ",".join(LATER_STAGES[:-1]), "--env",
                 req.env, "--params", ",".join(params)], req.project_dir)
    registration = json.loads(paths["registration"].read_text())
    if registration.get("registered") is False or registration.get("version") is None:
        return RetrainOutcome(  # pending.json stays: the next retrain finishes this one
            EXIT_FAILED, f"{summary}: the training run registered no challenger "
            f"({registration.get('reason', 'no version in its registration record')}); "
            "nothing was gated and the champion is unchanged. Fix that and run the same "
            "command again to resume")
    test_summary = json.loads(paths["summary"].read_text())
    record = _record(req, detection, data, registration, test_summary, started)

    write_record(paths["records"], record)
    # the test set this challenger was scored on is the frozen one from now on
    if paths["manifest"].is_file():
        write_test_reference(paths["test_reference"], paths["manifest"])
    # The report shows the record (catalog `retraining_record`): rebuilt now, it reads as
    # any later rebuild (`dvc repro`) will; then DVC records the stages the run changed.
    run_command([tool("kedro"), "run", "--pipelines", LATER_STAGES[-1], "--env", req.env,
                 *(["--params", req.params] if req.params else [])], req.project_dir)
    record_stages(req.project_dir, req.env)
    paths["pending"].unlink(missing_ok=True)  # done: the next call detects afresh
    return RetrainOutcome(EXIT_OK, f"{summary}: {record['decision']}: {record['reason']}",
                          record=record, retrain=True)


def _record(req: RetrainRequest, detection: Detection, data: dict, registration: dict,
            test_summary: dict, started: str) -> dict[str, Any]:
    promote = registration.get("decision_promote")
    if registration.get("unchanged"):
        decision = "unchanged"
    else:
        decision = "promoted" if promote else "rejected"
    return {
        "dataset": req.dataset,
        "env": req.env,
        "started": started,
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "changes": detection.changes.as_dict(),
        "data": data,
        "params": req.params,
        "warm_start": req.warm_start,
        "change_test_set": req.change_test_set,
        "test_set_id": test_summary.get("test_set_id"),
        "n_test_images": test_summary.get("n_images"),
        "test_dice": test_summary.get("test_dice"),
        "registration": {k: registration.get(k) for k in
                         ("model_name", "version", "run_id", "model_uri", "aliases",
                          "unchanged")},
        "gate": registration.get("gate"),
        "decision": decision,
        "reason": registration.get("decision_reason"),
    }


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def _read_pending(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _with_pending(detection: Detection, pending: dict) -> Detection:
    """``detection`` plus what the interrupted retrain had found (already ingested)."""
    import dataclasses

    from sa2_pipeline.retraining.detect import SlideChanges

    old, new = pending.get("changes", {}), detection.changes

    def merged(key: str) -> tuple[str, ...]:
        return tuple(sorted(set(old.get(key, [])) | set(getattr(new, key))))

    changes = SlideChanges(merged("new"), merged("changed"), merged("removed"),
                           merged("test_affected"))
    return dataclasses.replace(detection, changes=changes)


def _warm_start_param(req: RetrainRequest) -> str:
    """``training.init_from=<champion's bundle>`` when warm-starting (and there is one)."""
    if not req.warm_start:
        return ""

    folder = req.project_dir / "data" / "06_models" / req.dataset / "warm_start"
    path = champion_bundle_file(req.model_name, folder)
    if path is None:
        logger.warning("--warm-start: %s has no champion yet; training from scratch",
                       req.model_name)
        return ""
    logger.info("warm start from the champion's weights: %s", path)
    return f"training.init_from={path}"
