"""Segment many inputs into one output folder, resumably; shared by Kedro and the CLI.

Output folder layout (``out_dir``, e.g.
``data/09_inference/<dataset>/results/<model-version>/``)::

    <name>.mask.png | <name>.mask.tif    label mask at the input's full size    (outputs: mask)
    <name>.mask.ome.tif                  the mask as a pyramidal OME-TIFF         (outputs: ome)
    <name>.labels.ome.tif                uint32 instance labels, OME-TIFF         (outputs: labels)
    <name>.geojson                       every object as a QuPath detection       (outputs: geojson)
    <name>.overlay.png                   thumbnail, foreground tinted, objects outlined
    <name>.csv                           one-row summary (foreground, object count, density
                                         per mm^2 of tissue, area median and quartiles)
    <name>.objects.csv                   one row per object: area in px and um^2
    records/<name-hash>-<sha256>.json    one record per finished input (name and content)
    manifest.json                        the run: model, settings, every record, failures
    index.html                           one self-contained page: a row per input

``<name>`` is the input's path relative to its folder (the full file name, extension
included, so ``a.png`` and ``a.tif`` never write the same file).

Resuming: an input whose name and SHA-256 already have a record made with the same model
version and settings, and whose outputs are all present, is skipped. The same bytes under
two names are two inputs, each with its own outputs. Records are written atomically
after the outputs, so a run killed at any point redoes at most the input it was on.

Splitting: with ``num_parts = N`` and ``part_id = K`` this process takes the inputs whose
position in the sorted list is ``K`` modulo ``N``; parts can run on different machines
over a shared folder (each writes only its own inputs' records; the manifest is rebuilt
from all records present).
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sa2_pipeline.config import InferenceConfig
from sa2_pipeline.inference.run_index import SLIDE_NUMBERS, write_index
from sa2_pipeline.inference.segment import segment_file
from sa2_pipeline.inference.slides import SUPPORTED_SUFFIXES, UnreadableImageError
from sa2_pipeline.io_utils import atomic_write_text
from sa2_pipeline.runtime.threads import configure_threads

logger = logging.getLogger(__name__)

MANIFEST_FORMAT = "sa2-pipeline/inference-manifest/1"


@dataclass(frozen=True)
class InputFile:
    """One input and the name its outputs take."""

    path: Path
    name: str


@dataclass
class RunResult:
    """What a run did."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """The number of failed inputs (capped at 100), 0 when all succeeded."""
        return min(len(self.failed), 100)


def collect_inputs(items: Iterable[str | Path],
                   exclude: Path | None = None) -> list[InputFile]:
    """Expand files, folders (recursively, supported extensions) and glob patterns.

    A named file is kept whatever its extension (so an unsupported one is reported, not
    silently dropped); a missing file is kept too and reported as missing. Files under
    ``exclude`` (the run's output folder, when it lies inside an input folder) are never
    inputs: a run does not segment its own masks.

    Raises:
        ValueError: Two inputs would write outputs of the same name, or a glob or folder
            matched nothing.
    """
    found: list[InputFile] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            for child in sorted(p for p in path.rglob("*") if p.is_file()
                                and p.suffix.lower() in SUPPORTED_SUFFIXES
                                and not p.name.startswith(".")
                                and not _inside(p, exclude)):
                found.append(InputFile(child, child.relative_to(path).as_posix()))
        elif glob.has_magic(str(item)) and not path.exists():
            matches = [Path(m) for m in sorted(glob.glob(str(item), recursive=True))
                       if Path(m).is_file() and not _inside(Path(m), exclude)]
            if not matches:
                raise ValueError(f"{item}: the pattern matches no file")
            found += [InputFile(m, m.name) for m in matches]
        else:
            found.append(InputFile(path, path.name))
    if not found:
        raise ValueError(f"no image or slide to segment in {', '.join(map(str, items))} "
                         f"(supported: {', '.join(sorted(SUPPORTED_SUFFIXES))})")
    by_name: dict[str, Path] = {}
    for entry in found:
        other = by_name.setdefault(entry.name, entry.path)
        if other != entry.path:
            raise ValueError(f"{other} and {entry.path} would both write outputs named "
                             f"{entry.name!r}: segment them into different folders")
    return list({e.path: e for e in found}.values())


def select_part(inputs: list[InputFile], num_parts: int, part_id: int) -> list[InputFile]:
    """The inputs of part ``part_id`` of ``num_parts`` (round robin over sorted names)."""
    if num_parts < 1 or not 0 <= part_id < num_parts:
        raise ValueError(f"need num_parts >= 1 and 0 <= part_id < num_parts; got "
                         f"num_parts={num_parts}, part_id={part_id}")
    ordered = sorted(inputs, key=lambda e: e.name)
    return [e for i, e in enumerate(ordered) if i % num_parts == part_id]


def _inside(path: Path, folder: Path | None) -> bool:
    """Whether ``path`` lies under ``folder`` (both resolved)."""
    if folder is None:
        return False
    return path.resolve().is_relative_to(folder.resolve())


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


#: Settings that do not change a mask (beyond float rounding): not part of the resume key.
_NOT_IN_KEY = ("batch_size",)


def _settings_key(model: dict[str, Any], settings: InferenceConfig) -> str:
    kept = {k: v for k, v in settings.mask_settings().items() if k not in _NOT_IN_KEY}
    text = json.dumps({"model": {k: model.get(k) for k in ("name", "version", "uri")},
                       "settings": kept}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _record_name(name: str, digest: str) -> str:
    """The record of input ``name`` with content ``digest``: one per (name, content), so
    the same bytes under two names are two inputs with their own outputs."""
    return f"{hashlib.sha256(name.encode()).hexdigest()[:16]}-{digest}.json"


def _already_done(record_path: Path, key: str, out_dir: Path) -> bool:
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        return False
    return record.get("key") == key and all(
        (out_dir / name).is_file() for name in record.get("outputs", {}).values())


def segment_inputs(inputs: list[InputFile], predictor: Any, settings: InferenceConfig,
                   out_dir: Path, *, model: dict[str, Any], progress: bool = True
                   ) -> RunResult:
    """Segment ``inputs`` into ``out_dir``; a bad input is recorded and the rest go on.

    Args:
        inputs: From :func:`collect_inputs` (and :func:`select_part`).
        predictor: A :class:`~sa2_pipeline.inference.predict.Predictor`.
        settings: The mask-changing settings.
        out_dir: The output folder (module docstring).
        model: What identifies the model (name, concrete version, URI): recorded, and part
            of the resume key with the settings.
        progress: tqdm bars per folder and per slide (on stderr).
    """
    from tqdm.auto import tqdm

    key = _settings_key(model, settings)
    result = RunResult()
    bar = tqdm(inputs, desc="inputs", unit="image", disable=not progress)
    for entry in bar:
        bar.set_postfix_str(entry.name[-40:])
        try:
            status = _segment_one(entry, predictor, settings, out_dir, key, model, progress)
        except UnreadableImageError as err:
            reason = str(err).removeprefix(f"{entry.path}: ")
            result.failed[entry.name] = reason
            logger.error("%s: %s", entry.path, reason)
            continue
        except (ValueError, RuntimeError, MemoryError, OSError) as err:
            result.failed[entry.name] = f"{type(err).__name__}: {err}"
            logger.error("%s: %s: %s", entry.path, type(err).__name__, err)
            continue
        (result.skipped if status == "skipped" else result.done).append(entry.name)
    write_manifest(out_dir, model, settings, result, engine=_engine_record(predictor))
    return result


def _engine_record(predictor: Any) -> dict[str, Any] | None:
    """What ran the network (:class:`~sa2_pipeline.inference.engines.EngineChoice`)."""
    choice = getattr(predictor, "engine", None)
    return choice.as_record() if hasattr(choice, "as_record") else None


def predictor_settings(cfg: InferenceConfig) -> dict[str, Any]:
    """The keyword arguments of a :class:`~sa2_pipeline.inference.predict.Predictor` that
    ``cfg`` sets: engine, precision, tiles per forward, tile."""
    return {"engine": cfg.engine, "precision": cfg.precision, "batch_size": cfg.batch_size,
            "patch_size": cfg.patch_size}


def _segment_one(entry: InputFile, predictor, settings, out_dir: Path, key: str,
                 model: dict[str, Any], progress: bool) -> str:
    from tqdm.auto import tqdm


    if not entry.path.is_file():
        reason = "no such file" if not entry.path.exists() else "not a file"
        raise UnreadableImageError(f"{entry.path}: {reason}")
    digest = sha256_file(entry.path)
    record_path = out_dir / "records" / _record_name(entry.name, digest)
    if _already_done(record_path, key, out_dir):
        logger.info("%s: already segmented with this model and settings, skipped", entry.path)
        return "skipped"
    with tqdm(desc=entry.name[-30:], unit="tile row", leave=False,
              disable=not progress) as bar:
        def on_row(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        record = segment_file(entry.path, predictor, settings, out_dir, entry.name, on_row)
    record.update({"input": str(entry.path), "name": entry.name, "sha256": digest,
                   "key": key, "model": model, "settings": settings.mask_settings()})
    atomic_write_text(record_path, json.dumps(record, indent=2, sort_keys=True))
    logger.info("%s -> %s (foreground %.1f%%, %d objects)", entry.path,
                out_dir / record["outputs"]["summary"], 100 * record["foreground_fraction"],
                record["object_count"])
    return "done"


def write_manifest(out_dir: Path, model: dict[str, Any], settings: InferenceConfig,
                   result: RunResult, engine: dict[str, Any] | None = None) -> Path:
    """``manifest.json``: the model, the settings, every record present (by input name),
    this run's failures, and (``engine``) what ran the network."""

    records = {}
    for path in sorted((out_dir / "records").glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        records[record["name"]] = {k: record[k] for k in ("input", "name", "sha256", "outputs",
                                                           "model", "settings", "key")}
        records[record["name"]].update({k: record.get(k) for k in SLIDE_NUMBERS})
    manifest = {"format": MANIFEST_FORMAT, "model": model, "settings": settings.mask_settings(),
                "inputs": records, "failed": result.failed, "engine": engine,
                "this_run": {"done": result.done, "skipped": result.skipped}}
    path = atomic_write_text(out_dir / "manifest.json",
                             json.dumps(manifest, indent=2, sort_keys=True))
    write_index(out_dir, manifest)
    return path


def with_model_mpp(cfg: InferenceConfig, model_mpp: float | None) -> InferenceConfig:
    """``cfg`` with the model version's training pixel size where ``cfg`` names none."""
    import dataclasses

    return cfg if cfg.model_mpp is not None else dataclasses.replace(cfg, model_mpp=model_mpp)


def run_folder(cfg: InferenceConfig, model: Any, load_predictor: Callable[[Any], Any], *,
               inputs: list[InputFile] | None = None,
               out_dir: Path | None = None) -> dict[str, Any]:
    """Segment this part's inputs with one resolved model version (module docstring).

    Args:
        cfg: An :class:`sa2_pipeline.config.InferenceConfig`.
        model: The concrete model version the run uses (resolved once by the caller, e.g.
            :func:`sa2_pipeline.tracking.model_loading.resolve_model`): it has ``label``
            (the output folder's name), ``pixel_size_um`` and ``as_record()``.
        load_predictor: ``device -> Predictor`` for that version; called once.
        inputs: The inputs (default: everything under ``cfg.input_dir``).
        out_dir: The output folder (default ``<cfg.output_dir>/<model.label>``).

    Returns:
        The summary: model, output folder, counts, failures by input name.
    """
    from sa2_pipeline.runtime.devices import select_device

    out_dir = out_dir or Path(cfg.output_dir) / model.label
    if inputs is None:
        root = Path(cfg.input_dir)
        if not root.is_dir():
            raise FileNotFoundError(f"inference.input_dir {root} is not a folder")
        inputs = collect_inputs([root], exclude=out_dir)
    mine = select_part(inputs, cfg.num_parts, cfg.part_id)
    settings = with_model_mpp(cfg, model.pixel_size_um)
    configure_threads(cfg.num_threads)
    predictor = load_predictor(select_device(cfg.device))
    engine = _engine_record(predictor)
    if engine:  # the engine's tiles per forward (auto measures them; not in the resume key)
        settings = dataclasses.replace(settings, batch_size=engine["batch_size"])
    result = segment_inputs(mine, predictor, settings, out_dir, model=model.as_record(),
                            progress=cfg.progress)
    logger.info("%d segmented, %d already done, %d failed (part %d of %d) -> %s",
                len(result.done), len(result.skipped), len(result.failed), cfg.part_id,
                cfg.num_parts, out_dir)
    return {"model": model.as_record(), "out_dir": str(out_dir), "total": len(mine),
            "done": result.done, "skipped": result.skipped, "failed": result.failed,
            "part_id": cfg.part_id, "num_parts": cfg.num_parts, "engine": engine}
