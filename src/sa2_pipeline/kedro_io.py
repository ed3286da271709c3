"""Custom Kedro datasets for arrays, image folders, model bundles, tables, JSON and text.

Every save is atomic (temporary sibling, then rename: :mod:`sa2_pipeline.io_utils`), so a
run killed mid-save, or a save that fails with a full or read-only disk, leaves the
previous complete output, never a torn one -- which is also what lets ``dvc repro`` trust
what it finds on disk. The CSV, JSON and text datasets are kedro-datasets' own (same load
and save arguments) with the save replaced: the content is rendered in memory first, then
written through :func:`~sa2_pipeline.io_utils.atomic_write_bytes`.
"""

from __future__ import annotations

import io
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from kedro.io import AbstractDataset, DatasetError
from kedro.io.core import get_filepath_str
from kedro_datasets.json import JSONDataset
from kedro_datasets.pandas import CSVDataset
from kedro_datasets.text import TextDataset

from sa2_pipeline.datasets.schema import KEY_SEPARATOR as _SEP
from sa2_pipeline.io_utils import atomic_directory, atomic_write_bytes
from sa2_pipeline.models.bundle import load_bundle_file, validate_bundle


class ArrayBundleDataset(AbstractDataset[dict, dict]):
    """A nested dict of NumPy arrays (``{"images": {id: arr}, "masks": {id: arr}}``) in one
    uncompressed ``.npz`` file: fast to load, one file for DVC to track.
    """

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        self._filepath = PurePosixPath(filepath)
        self.metadata = metadata

    def load(self) -> dict[str, dict[str, np.ndarray]]:
        out: dict[str, dict[str, np.ndarray]] = {}
        with np.load(self._filepath, allow_pickle=False) as npz:
            for key in npz.files:
                group, _, name = key.partition(_SEP)
                out.setdefault(group, {})[name] = npz[key]
        return out

    def save(self, data: dict[str, dict[str, np.ndarray]]) -> None:
        flat = {}
        for group, arrays in data.items():
            for name, arr in arrays.items():
                if _SEP in group or _SEP in name:
                    raise DatasetError(
                        f"{self._filepath}: key {group!r}/{name!r} contains '{_SEP}'"
                    )
                flat[f"{group}{_SEP}{name}"] = np.asarray(arr)
        buffer = io.BytesIO()
        np.savez(buffer, **flat)
        atomic_write_bytes(self._filepath, buffer.getbuffer())

    def _exists(self) -> bool:
        return Path(self._filepath).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}


class ImageFolderDataset(AbstractDataset[dict, dict]):
    """``{id: uint8 array}`` <-> a folder of lossless PNG files named ``<id>.png``.

    The folder is written whole under a temporary name and renamed into place, replacing
    the previous version only when every image is written.
    """

    def __init__(self, path: str, metadata: dict[str, Any] | None = None) -> None:
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> dict[str, np.ndarray]:
        import cv2

        if not self._path.is_dir():
            raise DatasetError(f"{self._path}: folder not found")
        out = {}
        for file in sorted(self._path.glob("*.png")):
            arr = cv2.imread(str(file), cv2.IMREAD_UNCHANGED)
            if arr is None:
                raise DatasetError(f"{file}: unreadable PNG")
            if arr.ndim == 3:
                arr = cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)
            out[file.stem] = arr
        return out

    def save(self, data: dict[str, np.ndarray]) -> None:
        import cv2

        with atomic_directory(self._path, overwrite=True) as tmp:
            for name, arr in data.items():
                arr = np.asarray(arr)
                if arr.ndim == 3:
                    arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
                ok, png = cv2.imencode(".png", arr)  # encode first: disk errors are OSErrors
                if not ok:
                    raise DatasetError(f"{self._path}: could not encode {name!r} as PNG")
                (tmp / f"{name}.png").write_bytes(png.tobytes())

    def _exists(self) -> bool:
        return self._path.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}


class ModelBundleDataset(AbstractDataset[dict, dict]):
    """A model bundle (:mod:`sa2_pipeline.models.bundle`) as a weights-only torch file."""

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        self._filepath = PurePosixPath(filepath)
        self.metadata = metadata

    def load(self) -> dict[str, Any]:
        return validate_bundle(load_bundle_file(self._filepath), str(self._filepath))

    def save(self, data: dict[str, Any]) -> None:
        import torch

        buffer = io.BytesIO()
        torch.save(data, buffer)
        atomic_write_bytes(self._filepath, buffer.getbuffer())

    def _exists(self) -> bool:
        return Path(self._filepath).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}


class FigurePngDataset(AbstractDataset[Any, bytes]):
    """Saves a matplotlib figure as PNG (then closes it); loads the PNG's bytes.

    Unlike a write-only figure writer, downstream nodes (the report) can consume it.
    """

    def __init__(self, filepath: str, dpi: int = 110, metadata: dict[str, Any] | None = None):
        self._filepath = PurePosixPath(filepath)
        self._dpi = dpi
        self.metadata = metadata

    def load(self) -> bytes:
        return Path(self._filepath).read_bytes()

    def save(self, data: Any) -> None:
        import matplotlib.pyplot as plt

        buffer = io.BytesIO()
        data.savefig(buffer, format="png", dpi=self._dpi)
        plt.close(data)
        atomic_write_bytes(self._filepath, buffer.getbuffer())

    def _exists(self) -> bool:
        return Path(self._filepath).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "dpi": self._dpi}


class ModelBundleFolderDataset(AbstractDataset[dict, dict]):
    """``{key: model bundle}`` <-> a folder of weights-only torch files ``<key>.pt``.

    Holds every trained (model, fold); written whole and renamed into place.
    """

    def __init__(self, path: str, metadata: dict[str, Any] | None = None) -> None:
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> dict[str, dict[str, Any]]:
        if not self._path.is_dir():
            raise DatasetError(f"{self._path}: folder not found")
        files = sorted(self._path.glob("*.pt"))
        if not files:
            raise DatasetError(f"{self._path}: no model bundles (*.pt) in the folder")
        return {f.stem: ModelBundleDataset(str(f)).load() for f in files}

    def save(self, data: dict[str, dict[str, Any]]) -> None:
        import torch

        with atomic_directory(self._path, overwrite=True) as tmp:
            for key, bundle in data.items():
                buffer = io.BytesIO()  # serialise first: a disk error is then an OSError
                torch.save(bundle, buffer)
                (tmp / f"{key}.pt").write_bytes(buffer.getbuffer())

    def _exists(self) -> bool:
        return self._path.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}


def _atomic_local_save(dataset: Any, payload: bytes) -> None:
    """Write a kedro-datasets dataset's rendered ``payload`` atomically to its save path."""
    if dataset._protocol not in ("file", "local"):
        raise DatasetError(f"{dataset._filepath}: atomic saves need a local path")
    atomic_write_bytes(get_filepath_str(dataset._get_save_path(), dataset._protocol), payload)
    dataset._invalidate_cache()


class AtomicCSVDataset(CSVDataset):
    """kedro-datasets' ``pandas.CSVDataset`` whose save is atomic."""

    def save(self, data: Any) -> None:
        encoding = self._save_args.get("encoding") or "utf-8"
        text = data.to_csv(path_or_buf=None, **self._save_args)
        _atomic_local_save(self, text.encode(encoding))


class AtomicJSONDataset(JSONDataset):
    """kedro-datasets' ``json.JSONDataset`` whose save is atomic."""

    def save(self, data: Any) -> None:
        import json

        _atomic_local_save(self, json.dumps(data, **self._save_args).encode("utf-8"))


class OptionalJSONDataset(AtomicJSONDataset):
    """A JSON file that may not exist yet: loads as ``{}`` when it is missing.

    The reporting pipeline reads the latest retraining record through it: a project that
    has never been retrained has none, and its report simply has no retraining section.
    """

    def load(self) -> Any:
        if not Path(get_filepath_str(self._get_load_path(), self._protocol)).is_file():
            return {}
        return super().load()

    def _exists(self) -> bool:
        return True


class AtomicTextDataset(TextDataset):
    """kedro-datasets' ``text.TextDataset`` whose save is atomic."""

    def save(self, data: str) -> None:
        _atomic_local_save(self, data.encode("utf-8"))
