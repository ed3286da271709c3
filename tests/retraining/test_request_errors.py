"""``sa2-pipeline detect/retrain`` with a bad ``--env`` or ``--params``: one message naming
what is allowed, exit status 1, no traceback, nothing run."""

from __future__ import annotations

import pytest

from sa2_pipeline.cli import main

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("env", ["monusge", "..", "/etc", "base", "base/../glas", "conf"])
@pytest.mark.parametrize("command", ["detect", "retrain"])
def test_an_unknown_or_path_like_env_is_refused_by_name(capsys, command, env):
    code = main([command, "--env", env, "--project-dir", str(REPO)])
    err = capsys.readouterr().err
    assert code == 1
    assert f"--env {env!r} is not an environment" in err and "monuseg" in err, err
    assert "Traceback" not in err


def test_params_that_are_not_key_value_are_refused(capsys):
    code = main(["detect", "--env", "synthetic", "--project-dir", str(REPO),
                 "--params", "oops"])
    err = capsys.readouterr().err
    assert code == 1 and "--params item 'oops' is not key=value" in err, err
    assert "Traceback" not in err
