"""The committed dvc.lock matches the code, configuration and parameters it records.

``dvc repro`` re-runs every stage whose recorded dependencies changed, so a dvc.lock
that was not regenerated after a code or parameter change makes a fresh clone redo the
whole pipeline, and the lock no longer says what produced the data. This test asks DVC
itself (``dvc status``) and fails on any changed *code, config or parameter* dependency.
Data dependencies (``data/...``) are left out: they are this machine's outputs, absent
from a fresh clone.

After changing a stage's code or parameters, regenerate the lock: ``make dvc-repro``
(``dvc repro``), then commit dvc.lock.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _dvc() -> str:
    beside = Path(sys.executable).parent / "dvc"
    found = str(beside) if beside.exists() else shutil.which("dvc")
    if found is None:
        pytest.skip("dvc is not installed")
    return found


def stale_dependencies(status: dict) -> list[str]:
    """``stage: path (change)`` for every changed code/config/parameter dependency."""
    stale = []
    for stage, entries in status.items():
        for entry in entries if isinstance(entries, list) else []:
            if not isinstance(entry, dict):
                continue
            for path, change in entry.get("changed deps", {}).items():
                if not path.startswith("data/"):
                    stale.append(f"{stage}: {path} ({change})")
    return sorted(stale)


def test_stale_dependencies_are_found_in_dvc_status_output() -> None:
    status = {"training@x": [{"changed deps": {"src/a": "modified",
                                               "data/05/x.npz": "deleted"}},
                             {"changed outs": {"data/06": "not in cache"}}],
              "evaluation@x": [{"changed deps": {"conf/base/parameters_evaluation.yml":
                                                 {"evaluation": "modified"}}}]}
    assert stale_dependencies(status) == [
        "evaluation@x: conf/base/parameters_evaluation.yml ({'evaluation': 'modified'})",
        "training@x: src/a (modified)",
    ]
    assert stale_dependencies({"a": [{"changed outs": {"data/x": "deleted"}}]}) == []


def _checkout_copy(root: Path) -> Path:
    """The checkout's files as a clone of the working tree holds them (tracked, and
    untracked but not ignored), without ``data/``: ``dvc status`` runs there, so its
    lock and state files (``.dvc/tmp/``) are written in the test's folder, not the
    project's."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard",
                             "-z"], cwd=ROOT, capture_output=True, check=False)
    if listed.returncode != 0:
        pytest.skip(f"{ROOT} is not a git working tree")
    for name in filter(None, listed.stdout.decode().split("\0")):
        source = ROOT / name
        if name.split("/", 1)[0] == "data" or not source.is_file():
            continue
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, root / name)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)  # DVC's repo is a git one
    return root


def test_dvc_lock_is_current_with_the_code_and_parameters(tmp_path) -> None:
    """Fails until dvc.lock is regenerated after a change to a stage's code or params."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run([_dvc(), "status", "--json"], cwd=_checkout_copy(tmp_path),
                            env=env, capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stderr
    stale = stale_dependencies(json.loads(result.stdout or "{}"))
    assert not stale, ("dvc.lock is out of date; run `make dvc-repro` and commit dvc.lock:\n"
                       + "\n".join(stale))
