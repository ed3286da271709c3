"""Every catalog output is written atomically, with the umask, and a failed write loses nothing.

Each test builds the real catalog (``conf/base/catalog.yml``, paths moved under a temporary
folder) and saves through it, so a new catalog entry is covered without touching this file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import signal
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
CATALOG = ROOT / "conf" / "base" / "catalog.yml"
_MLFLOW_ONLY = "kedro_mlflow.io.metrics.MlflowMetricsHistoryDataset"
_PATTERNS = {"model_input_{split}": "model_input_train", "figure_{name}": "figure_curve"}


def _catalog_config(root: Path) -> dict:
    text = CATALOG.read_text().replace("${globals:dataset}", "ds")
    config = yaml.safe_load(text.replace("filepath: data/", f"filepath: {root}/data/")
                            .replace("path: data/", f"path: {root}/data/"))
    return {name: entry for name, entry in config.items() if entry["type"] != _MLFLOW_ONLY}


def _inner_type(entry: dict) -> str:
    return entry["dataset"]["type"] if "dataset" in entry else entry["type"]


FILE_OUTPUTS = sorted(_PATTERNS.get(n, n) for n in _catalog_config(Path("/x")))
INNER_TYPE = {_PATTERNS.get(n, n): _inner_type(e) for n, e in _catalog_config(Path("/x")).items()}


def _dataset(root: Path, name: str):
    from kedro.io import DataCatalog

    catalog = DataCatalog.from_config(_catalog_config(root))
    dataset = catalog.get(name)
    if hasattr(dataset, "_logging_activated"):
        dataset._logging_activated = False  # no MLflow run here: test the local write only
    return dataset


def _output_path(dataset) -> Path:
    return Path(str(getattr(dataset, "_filepath", None) or dataset._path))


def _sample(name: str, size: int, seed: int):
    """Data of the kind the catalog entry holds; ``size`` scales its encoded size."""
    rng = np.random.default_rng(seed)
    kind = INNER_TYPE[name].rsplit(".", 1)[-1]
    if kind == "AtomicCSVDataset":
        return pd.DataFrame({"id": [f"s{i}" for i in range(size)], "v": rng.random(size)})
    if kind in ("AtomicJSONDataset", "OptionalJSONDataset"):
        return {"seed": seed, "values": rng.random(size).tolist()}
    if kind == "AtomicTextDataset":
        return "".join(rng.choice(list("abcdef<>/\n"), size))
    image = rng.integers(0, 255, (max(4, int(size**0.5)), max(4, int(size**0.5)), 3), np.uint8)
    if kind == "ArrayBundleDataset":
        return {"images": {"a": image}, "masks": {"a": image[..., 0] > 127}}
    if kind == "ImageFolderDataset":
        return {"a": image, "b": image[..., 1]}
    if kind == "ModelBundleFolderDataset":
        import torch

        from sa2_pipeline.models.bundle import make_bundle

        weights = {"w": torch.from_numpy(rng.random(size).astype(np.float32))}
        return {"unet-fold0": make_bundle(model_name="unet", init_kwargs={"base_channels": 4},
                                          state_dict=weights, patch_size=64,
                                          metadata={"seed": seed})}
    if kind == "FigurePngDataset":
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(2, 2))
        ax.imshow(image)
        return fig
    raise AssertionError(f"no sample data for {name} ({kind}): add it here")


def _snapshot(path: Path) -> dict[str, bytes]:
    if path.is_file():
        return {path.name: path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file()}


def _siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


def _chain(exc: BaseException):
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__


def test_every_catalog_file_output_uses_an_atomic_dataset() -> None:
    config = _catalog_config(Path("/x"))
    assert config, "catalog parsed empty"
    for name, entry in config.items():
        assert _inner_type(entry).startswith("sa2_pipeline.kedro_io."), (
            f"catalog entry {name!r} ({_inner_type(entry)}) does not write atomically"
        )


@contextlib.contextmanager
def _file_size_limit(nbytes: int):
    """Make the kernel refuse writes past ``nbytes`` (EFBIG), as a full disk refuses them."""
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


@pytest.mark.parametrize("name", FILE_OUTPUTS)
def test_a_write_failing_midway_keeps_the_previous_output(tmp_path: Path, name: str) -> None:
    """A real mid-write failure (the kernel stops the file at 48 kB) of each catalog entry."""
    dataset = _dataset(tmp_path, name)
    dataset.save(_sample(name, 200, seed=1))
    out = _output_path(dataset)
    before, listing = _snapshot(out), _siblings(out)
    assert before and max(len(b) for b in before.values()) < 48_000
    with pytest.raises(Exception) as caught, _file_size_limit(48_000):
        _dataset(tmp_path, name).save(_sample(name, 100_000, seed=2))
    assert any(getattr(e, "errno", None) == errno.EFBIG for e in _chain(caught.value))
    assert str(out) in str(caught.value), f"error does not name {out}: {caught.value}"
    assert _snapshot(out) == before
    assert _siblings(out) == listing, "a temporary file or folder was left behind"


_FAULT_POINTS = ["os.fsync", "os.replace", "os.rename", "os.fchmod", "os.chmod",
                 "tempfile.mkstemp", "tempfile.mkdtemp"]


def _fail_on_call(target: str, nth: int, code: int):
    original = mock.patch(target).get_original()[0]
    calls = {"n": 0}

    def fake(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == nth:
            raise OSError(code, os.strerror(code))
        return original(*args, **kwargs)

    return mock.patch(target, side_effect=fake)


@given(name=st.sampled_from(FILE_OUTPUTS), target=st.sampled_from(_FAULT_POINTS),
       nth=st.integers(1, 3),
       code=st.sampled_from([errno.ENOSPC, errno.EROFS, errno.EIO, errno.EDQUOT, errno.EACCES]))
def test_an_os_error_at_any_step_of_a_save_loses_nothing_and_names_the_path(
    name: str, target: str, nth: int, code: int
) -> None:
    """Property: a save either completes, or fails with the same errno naming the output,
    leaving the previous version byte for byte and no temporary behind."""
    with tempfile.TemporaryDirectory() as tmp:
        dataset = _dataset(Path(tmp), name)
        dataset.save(_sample(name, 50, seed=1))
        out = _output_path(dataset)
        before, listing = _snapshot(out), _siblings(out)
        try:
            with _fail_on_call(target, nth, code):
                dataset.save(_sample(name, 60, seed=2))
        except Exception as exc:  # noqa: BLE001 - the property inspects it
            assert any(getattr(e, "errno", None) == code for e in _chain(exc)), exc
            assert str(out) in str(exc), f"error does not name {out}: {exc}"
            assert _snapshot(out) == before
        else:
            assert _snapshot(out) != before
            assert _dataset(Path(tmp), name).load() is not None
        assert _siblings(out) == listing, "a temporary file or folder was left behind"


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002], ids=oct)
@pytest.mark.parametrize("name", FILE_OUTPUTS)
def test_outputs_get_the_process_umask(tmp_path: Path, name: str, umask: int) -> None:
    previous = os.umask(umask)
    try:
        dataset = _dataset(tmp_path, name)
        dataset.save(_sample(name, 20, seed=0))
    finally:
        os.umask(previous)
    out = _output_path(dataset)
    paths = [out, *out.rglob("*")] if out.is_dir() else [out]
    for path in paths:
        expected = (0o777 if path.is_dir() else 0o666) & ~umask
        assert path.stat().st_mode & 0o777 == expected, f"{path}: {oct(path.stat().st_mode)}"


def test_checkpoint_and_segment_writes_get_the_umask(tmp_path: Path) -> None:
    from sa2_pipeline.io_utils import atomic_directory, atomic_write_bytes

    previous = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "ckpt" / "last.pt", b"x")
        with atomic_directory(tmp_path / "figs") as folder:
            (folder / "a.png").write_bytes(b"y")
    finally:
        os.umask(previous)
    assert (tmp_path / "ckpt" / "last.pt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "figs").stat().st_mode & 0o777 == 0o755


def test_disk_full_error_names_the_file_and_keeps_the_errno(tmp_path: Path) -> None:
    from sa2_pipeline.io_utils import atomic_write_bytes

    target = tmp_path / "report.html"
    target.write_text("old")
    with _fail_on_call("os.fsync", 1, errno.ENOSPC), pytest.raises(OSError) as caught:
        atomic_write_bytes(target, b"new")
    assert caught.value.errno == errno.ENOSPC
    assert str(target) in str(caught.value) and "No space left" in str(caught.value)
    assert target.read_text() == "old"
    assert _siblings(target) == ["report.html"]
