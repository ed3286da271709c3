"""User errors on the command line print one message naming the file, not a stack."""

from __future__ import annotations

import pathlib

import pytest
import torch

from sa2_pipeline.cli import main
from sa2_pipeline.models.sa2net.release_import import OfficialCheckpointError


class _Planted:
    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


@pytest.fixture
def tracking(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.delenv("SA2_VERBOSE", raising=False)
    return tmp_path


@pytest.mark.parametrize("kind", ["text", "dict", "planted"])
def test_import_release_of_a_non_checkpoint_prints_one_message(tracking, capsys, kind):
    bad = tracking / f"{kind}.pt"
    marker = tracking / "code-ran"
    if kind == "text":
        bad.write_text("hello\n")
    elif kind == "dict":
        torch.save({"foo": 1}, bad)
    else:
        torch.save({"state_dict": _Planted(marker)}, bad)
    code = main(["import-release", str(bad), "--dataset", "x"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("Error: ") and str(bad) in err
    assert "Traceback" not in err and "KeyError" not in err
    assert "weights_only=False" not in err
    if kind == "planted":
        assert "--trust" in err and not marker.exists()
    assert not (tracking / "mlruns").exists()


def test_verbose_keeps_the_stack(tracking):
    bad = tracking / "text.pt"
    bad.write_text("hello\n")
    with pytest.raises(OfficialCheckpointError):
        main(["--verbose", "import-release", str(bad), "--dataset", "x"])
