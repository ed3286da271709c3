"""notebooks/explore_predictions.ipynb runs headless against a project after `kedro run`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest

NOTEBOOK = Path("notebooks") / "explore_predictions.ipynb"
REPO_ROOT = Path(__file__).resolve().parents[2]
KERNEL = "sa2-pipeline-tests"


@pytest.fixture(scope="session")
def kernel_name(tmp_path_factory):
    """A kernelspec that runs this interpreter (whatever else Jupyter has registered)."""
    prefix = tmp_path_factory.mktemp("jupyter")
    subprocess.run(
        [sys.executable, "-m", "ipykernel", "install", "--prefix", str(prefix),
         "--name", KERNEL],
        check=True, capture_output=True, timeout=120,
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
        yield KERNEL


def _texts(nb) -> str:
    chunks = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                chunks.append(out["text"])
            elif "text/plain" in out.get("data", {}):
                chunks.append(out["data"]["text/plain"])
    return "\n".join(chunks)


def test_notebook_is_stored_without_outputs():
    nb = nbformat.read(REPO_ROOT / NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    assert any(c.cell_type == "markdown" for c in nb.cells)


@pytest.mark.parametrize("cwd", ["notebooks", "."], ids=["cwd-notebooks", "cwd-root"])
def test_notebook_executes(kedro_project, kernel_name, cwd):
    from nbclient import NotebookClient

    nb = nbformat.read(kedro_project.root / NOTEBOOK, as_version=4)
    workdir = kedro_project.root / cwd
    client = NotebookClient(
        nb, timeout=300, kernel_name=kernel_name,
        resources={"metadata": {"path": str(workdir)}},
    )
    # A failing cell raises CellExecutionError with the cell's traceback.
    client.execute(env=dict(kedro_project.env))

    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    text = _texts(nb)
    assert "Per-image test Dice table" in text
    assert "dice" in text and "iou" in text
    manifest = pd.read_csv(kedro_project.data("02_intermediate", "manifest.csv"))
    for image_id in manifest.loc[manifest["split"] == "test", "id"]:
        assert image_id in text
    pngs = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert pngs, "the overlay figure was not displayed"
    # The notebook works from the project root whatever its cwd: nothing lands elsewhere.
    assert not (kedro_project.root / "notebooks" / "mlflow.db").exists()
