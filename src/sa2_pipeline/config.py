"""Typed, frozen schemas for every parameter group in ``conf/*/parameters_*.yml``.

Each Kedro node receives its parameters as a plain dict (``params:<group>``, which is also
what kedro-mlflow logs) and parses it once with :func:`parse`. Unknown keys, wrong types and
illegal values fail at once with a message that names the key, the value and what is allowed,
so a typo in a YAML file never trains for an hour with a default silently used instead.

One source of defaults. The rule: **every value in ``conf/base/parameters_*.yml`` equals
its schema default here** (``tests/test_config.py`` checks each one). So ``conf/base`` and
the code never disagree: a key left out of a YAML file, or a schema parsed from ``{}``
outside Kedro, gets exactly what a plain ``kedro run`` uses. Values ``conf/base`` derives
from ``globals.yml`` (``${globals:dataset}``) are compared after resolving it; here they
derive from :data:`DEFAULT_DATASET`, which must equal ``conf/base/globals.yml``'s
``dataset``. Dataset environments (``conf/<dataset>/``) override ``globals.dataset`` and
the keys they change; the defaults stay those of ``conf/base``. A changed default is
changed in both places, or the test fails.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, get_args, get_origin

from sa2_pipeline.datasets.registry import FORMATS
from sa2_pipeline.models import list_models
from sa2_pipeline.runtime.precision import PRECISIONS
from sa2_pipeline.user_errors import UserError

T = TypeVar("T")

#: ``data_ingestion.format``: the keys of the one adapter table
#: (:data:`sa2_pipeline.datasets.registry.ADAPTERS`).
RawFormat = Literal[FORMATS]  # type: ignore[valid-type]

#: ``*.precision``: the names :mod:`sa2_pipeline.runtime.precision` resolves.
Precision = Literal[PRECISIONS]  # type: ignore[valid-type]

#: ``*.device``.
Device = Literal["auto", "cpu", "cuda"]

#: ``inference.engine``, ``evaluation.engine``: what runs the network
#: (:mod:`sa2_pipeline.inference.engines`, docs/inference.md).
Engine = Literal["auto", "torch", "onnxruntime", "openvino"]


class ConfigError(UserError, ValueError):
    """A parameter group does not match its schema."""


#: ``dataset`` of ``conf/base/globals.yml``: names the default paths and registered model.
DEFAULT_DATASET = "synthetic"


# --------------------------------------------------------------------------- ingestion
@dataclass(frozen=True)
class SyntheticDataConfig:
    """The embedded synthetic H&E dataset (written in the MoNuSeg raw format)."""

    generate_if_missing: bool = True
    n_train: int = 24
    n_test: int = 8
    image_size: int = 256
    seed: int = 0


@dataclass(frozen=True)
class IngestionConfig:
    """``params:data_ingestion``: which dataset, in which raw format, where."""

    dataset: str = DEFAULT_DATASET
    format: RawFormat = "monuseg"
    raw_dir: str = f"data/01_raw/{DEFAULT_DATASET}"
    #: null: never generate (a missing folder is an error).
    synthetic: SyntheticDataConfig | None = field(default_factory=SyntheticDataConfig)
    #: Downscale images (and masks) as they are read so the longer side is at most this;
    #: null keeps native resolution. Formats: isic2018, glas.
    max_side: int | None = None
    #: The folder format's mask rule (docs/datasets.md): auto, binary, labels, or
    #: instances (one id per object: binary training mask + instance map for evaluation).
    mask_kind: Literal["auto", "binary", "labels", "instances"] = "auto"
    #: The raw images' pixel size (um/px), recorded with the trained model (the version
    #: tag ``sa2.pixel_size_um``) so slide inference reads the matching pyramid level.
    #: null: the format's own when it has one (``datasets.registry.ADAPTERS``).
    pixel_size_um: float | None = None

    def __post_init__(self) -> None:
        if self.max_side is not None and self.max_side < 16:
            raise ConfigError(f"data_ingestion.max_side must be >= 16 or null, "
                              f"got {self.max_side}")
        if self.pixel_size_um is not None and not self.pixel_size_um > 0:
            raise ConfigError(f"data_ingestion.pixel_size_um must be > 0 or null, "
                              f"got {self.pixel_size_um}")


# --------------------------------------------------------------------------- processing
@dataclass(frozen=True)
class ProcessingConfig:
    """``params:data_processing``: splits and model inputs."""

    mode: Literal["native", "resize"] = "native"
    resize_to: int = 224
    n_folds: int = 5
    split_seed: int = 999

    def __post_init__(self) -> None:
        if self.n_folds < 2:
            raise ConfigError(f"data_processing.n_folds must be >= 2, got {self.n_folds}")
        if self.resize_to < 16:
            raise ConfigError(f"data_processing.resize_to must be >= 16, got {self.resize_to}")


# --------------------------------------------------------------------------- model
@dataclass(frozen=True)
class ModelConfig:
    """``params:model``: forwarded to :func:`sa2_pipeline.models.create_model`."""

    name: str = "sa2net"
    in_channels: int = 3
    num_classes: int = 1
    #: Sized for a 2-core CPU; the paper's width is 64 (``conf/paper``).
    base_channels: int = 16
    deep_supervision: bool = True

    def kwargs(self) -> dict[str, Any]:
        """Constructor keyword arguments for ``create_model(self.name, **kwargs)``."""
        kw = dataclasses.asdict(self)
        kw.pop("name")
        return kw


def parse_models(
    primary: dict[str, Any], baselines: list[dict[str, Any]] | None
) -> list[ModelConfig]:
    """``params:model`` plus ``params:baselines``: every model trained on the same data.

    The first entry is the primary model (the one registered and promoted); names must be
    unique because they key checkpoints, metrics and report rows.
    """
    models = [parse(ModelConfig, primary, "model")]
    for i, entry in enumerate(baselines or []):
        models.append(parse(ModelConfig, entry, f"baselines[{i}]"))
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ConfigError(f"model and baselines must have distinct names, got {names}")
    return models


# --------------------------------------------------------------------------- training
@dataclass(frozen=True)
class LossConfig:
    dice_weight: float = 0.5
    bce_weight: float = 0.5
    ce_weight: float = 0.5
    head_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)


@dataclass(frozen=True)
class SchedulerConfig:
    """Cosine annealing with warm restarts, as the release uses it.

    The release calls ``scheduler.step()`` twice per epoch with ``T_0 = 10``, so its
    effective period is ``T_0 / steps_per_epoch`` = 5 epochs; ``steps_per_epoch`` keeps that.
    """

    name: Literal["cosine_warm_restarts", "constant"] = "cosine_warm_restarts"
    t0: int = 10
    eta_min: float = 1e-4
    steps_per_epoch: int = 2


@dataclass(frozen=True)
class AugmentationConfig:
    name: Literal["none", "paper", "default"] = "default"


@dataclass(frozen=True)
class DistributedConfig:
    """Data-parallel training (PyTorch DDP launched by ``torchrun``).

    With ``nproc_per_node * nnodes > 1`` the training node starts ``torchrun`` as a
    subprocess (one process per GPU, or per CPU slot with the gloo backend); with the
    defaults everything runs in the calling process. ``batch_size`` is per process, so the
    effective batch is ``batch_size * world_size``. Multi-node: start the same command on
    every node with its ``node_rank`` and the first node's ``master_addr``.
    """

    nproc_per_node: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    backend: Literal["auto", "nccl", "gloo"] = "auto"

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes

    def __post_init__(self) -> None:
        for key in ("nproc_per_node", "nnodes"):
            if getattr(self, key) < 1:
                raise ConfigError(
                    f"training.distributed.{key} must be >= 1, got {getattr(self, key)}"
                )
        if not 0 <= self.node_rank < self.nnodes:
            raise ConfigError(
                f"training.distributed.node_rank must be in [0, nnodes - 1 = {self.nnodes - 1}], "
                f"got {self.node_rank}"
            )
        if not 1 <= self.master_port <= 65535:
            raise ConfigError(
                f"training.distributed.master_port must be in [1, 65535], got {self.master_port}"
            )


@dataclass(frozen=True)
class TrainingConfig:
    """``params:training``: the training engine's settings."""

    epochs: int = 12
    batch_size: int = 8
    patch_size: int = 128
    samples_per_epoch: int = 96
    foreground_oversample: float = 0.33
    lr: float = 1e-3
    weight_decay: float = 0.0
    early_stopping_patience: int = 50
    select_after_epoch: int = 0
    seed: int = 0
    device: Device = "auto"
    precision: Precision = "auto"
    channels_last: bool = True
    compile: bool = False
    num_workers: int = 0
    num_threads: int = 0
    val_batch_size: int = 4
    checkpoint_dir: str = f"data/06_models/{DEFAULT_DATASET}/checkpoints"
    folds: tuple[int, ...] | Literal["all"] = (0,)
    resume: bool = True
    channel_order: Literal["rgb", "bgr"] = "rgb"
    #: Warm start: a model bundle file (``torch.save``d, e.g. the champion's
    #: ``model_bundle.pt``) whose weights initialise the model; same architecture
    #: required. ``sa2-pipeline retrain --warm-start`` sets it to the champion's bundle.
    init_from: str | None = None
    loss: LossConfig = field(default_factory=LossConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)

    def __post_init__(self) -> None:
        for key in ("epochs", "batch_size", "patch_size", "samples_per_epoch"):
            if getattr(self, key) < 1:
                raise ConfigError(f"training.{key} must be >= 1, got {getattr(self, key)}")
        if self.patch_size < 16:
            raise ConfigError(f"training.patch_size must be >= 16, got {self.patch_size}")
        if self.folds != "all" and (not self.folds or min(self.folds) < 0):
            raise ConfigError(
                f"training.folds must be 'all' or fold indices >= 0, got {self.folds}"
            )
        if not 0.0 <= self.foreground_oversample <= 1.0:
            raise ConfigError(
                "training.foreground_oversample must be in [0, 1], "
                f"got {self.foreground_oversample}"
            )


# --------------------------------------------------------------------------- evaluation
@dataclass(frozen=True)
class InstanceConfig:
    """``params:evaluation.instances``: objects cut out of the predicted probability map
    (docs/metrics.md); the foreground threshold is the prediction's ``threshold``.

    ``method``: ``"watershed"`` (connected components split by a watershed on the distance
    transform, seeded at its local maxima at least ``min_distance`` apart) or
    ``"components"`` (connected components only). ``min_size``: objects smaller than this
    many pixels are dropped. ``connectivity``: 1 (4-neighbours) or 2 (8-neighbours).
    """

    method: Literal["watershed", "components"] = "watershed"
    min_distance: int = 4
    min_size: int = 10
    connectivity: int = 1

    def __post_init__(self) -> None:
        if self.method not in ("watershed", "components"):
            raise ConfigError(f"instances.method must be watershed or components, "
                              f"got {self.method!r}")
        if self.min_distance < 1 or self.min_size < 0 or self.connectivity not in (1, 2):
            raise ConfigError(
                "instances: need min_distance >= 1, min_size >= 0, connectivity 1 or 2; got "
                f"{self.min_distance}, {self.min_size}, {self.connectivity}")


@dataclass(frozen=True)
class PredictionConfig:
    """How a model's probabilities are predicted and thresholded: the settings test-set
    evaluation (``params:evaluation``), slide inference (``params:inference``,
    ``sa2-pipeline segment``) and the served model (the pyfunc's params) share. Each is
    defined here once; the library's functions and the CLI take their defaults from it.
    """

    #: Foreground where the probability is above it (binary models).
    threshold: float = 0.5
    #: Fraction of a sliding-window tile shared with its neighbour.
    overlap: float = 0.5
    #: Test-time augmentation: the mean over the 8 flips/rotations of the square.
    tta: bool = False
    precision: Precision = "fp32"
    device: Device = "auto"

    #: Names the group in error messages (``evaluation``, ``inference``).
    group: typing.ClassVar[str] = "prediction"

    def __post_init__(self) -> None:
        check_threshold(self.threshold, f"{self.group}.threshold")
        if not 0.0 <= self.overlap < 1.0:
            raise ConfigError(f"{self.group}.overlap must be in [0, 1), got {self.overlap}")


def check_threshold(value: Any, where: str = "threshold") -> float:
    """``value`` as a probability threshold in [0, 1]; the one range check.

    Raises:
        ConfigError: Not a number in [0, 1]; the message names ``where``.
    """
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
            0.0 <= value <= 1.0):
        raise ConfigError(f"{where} must be in [0, 1], got {value!r}")
    return float(value)


@dataclass(frozen=True)
class EvaluationConfig(PredictionConfig):
    """``params:evaluation``: sliding-window prediction of the held-out test set, object
    and boundary metrics, bootstrap intervals."""

    group: typing.ClassVar[str] = "evaluation"

    patch_size: int = 256
    batch_size: int = 4
    instances: InstanceConfig = field(default_factory=InstanceConfig)
    boundary_tolerance: float = 2.0
    bootstrap_resamples: int = 9999
    bootstrap_seed: int = 0
    #: torch CPU threads; 0 = automatic (runtime.threads: free cores, or $SA2_NUM_THREADS).
    num_threads: int = 0
    #: What runs the network; eager ``torch`` so the promotion gate scores every model the
    #: same way on every machine (docs/inference.md).
    engine: Engine = "torch"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_threads < 0:
            raise ConfigError(f"evaluation.num_threads must be >= 0, got {self.num_threads}")
        if self.patch_size < 16:
            raise ConfigError(f"evaluation.patch_size must be >= 16, got {self.patch_size}")
        if self.batch_size < 1:
            raise ConfigError(f"evaluation.batch_size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class RegistryConfig:
    """``params:registry``: MLflow model registration and the promotion gate."""

    register: bool = True
    model_name: str = f"sa2net-{DEFAULT_DATASET}"
    promotion_metric: str = "test_dice"
    promotion_margin: float = 0.0
    input_example_size: int = 64
    #: The statistical gate (sa2_pipeline.metrics.promotion): confidence of the one-sided
    #: lower bound of the paired bootstrap, the largest drop of any class's mean Dice
    #: allowed, and the bootstrap's resamples and seed.
    gate_confidence: float = 0.95
    class_tolerance: float = 0.02
    gate_resamples: int = 9999
    gate_seed: int = 0
    #: The data version the model trained on (``sa2-pipeline retrain`` sets it from DVC);
    #: recorded on the model version as ``sa2.data_version``.
    data_version: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.gate_confidence < 1.0:
            raise ConfigError(f"registry.gate_confidence must be in (0, 1), "
                              f"got {self.gate_confidence}")
        if self.class_tolerance < 0 or self.gate_resamples < 1:
            raise ConfigError("registry.class_tolerance must be >= 0 and "
                              "registry.gate_resamples >= 1")


@dataclass(frozen=True)
class RetrainingConfig:
    """``params:retraining``: ``sa2-pipeline retrain`` and its schedule (docs/retraining.md)."""

    #: New or changed images needed before a retrain starts.
    min_new_images: int = 1
    #: Let a change touch the frozen test set (the champion is then re-scored on it).
    change_test_set: bool = False
    #: Initialise the challenger with the champion's weights (``training.init_from``).
    warm_start: bool = False
    #: Airflow schedule of the dataset's DAG (deploy/airflow), e.g. "@daily", a cron
    #: expression, or null (triggered by hand only).
    schedule: str | None = "@daily"

    def __post_init__(self) -> None:
        if self.min_new_images < 1:
            raise ConfigError(f"retraining.min_new_images must be >= 1, "
                              f"got {self.min_new_images}")


@dataclass(frozen=True)
class KubeflowConfig:
    """``sa2-pipeline kubeflow compile``'s settings: where the pipelines run on a cluster
    (docs/kubeflow.md). Not a Kedro parameter group: they describe the cluster, not a run."""

    #: The container image every task runs in (deploy/kubeflow/Dockerfile builds it).
    image: str = "sa2-pipeline:latest"
    #: The PersistentVolumeClaim holding the project's ``data/`` (the Kedro catalog);
    #: empty: no volume (a local run, or remote catalog paths).
    pvc_name: str = "sa2-pipeline-data"
    #: The project checkout inside the image.
    project_dir: str = "/app"
    #: Where the volume is mounted: the project's ``data/`` inside the image.
    mount_path: str = "/app/data"
    #: The project's command line inside the image (its venv, as ``make setup`` makes it).
    cli: str = "/app/.venv/bin/sa2-pipeline"
    #: Tracking server the tasks log to; empty: the project's (``MLFLOW_TRACKING_URI``
    #: in the image, else ``conf/base/mlflow.yml``).
    tracking_uri: str = ""
    #: Retries of a failed inference part (each retry skips the inputs already done).
    part_retries: int = 2


@dataclass(frozen=True)
class ReportingConfig:
    """``params:reporting``."""

    n_overlays: int = 4
    title: str = f"SA2-Net on {DEFAULT_DATASET}"
    dataset: str = DEFAULT_DATASET

    def __post_init__(self) -> None:
        if self.n_overlays < 0:
            raise ConfigError(f"reporting.n_overlays must be >= 0, got {self.n_overlays}")


#: The files ``inference.outputs`` chooses among (docs/inference.md).
InferenceOutput = Literal["mask", "labels", "geojson", "ome"]
INFERENCE_OUTPUTS: tuple[str, ...] = typing.get_args(InferenceOutput)


@dataclass(frozen=True)
class InferenceConfig(PredictionConfig):
    """``params:inference``: ``kedro run --pipelines inference`` (docs/inference.md); the
    CLI's ``sa2-pipeline segment`` options are these fields, with these defaults."""

    group: typing.ClassVar[str] = "inference"
    #: The fields that change a mask: the resume key of a run (docs/inference.md).
    MASK_FIELDS: typing.ClassVar[tuple[str, ...]] = (
        "threshold", "tta", "overlap", "batch_size", "precision", "patch_size",
        "skip_background", "model_mpp", "thumbnail_side", "outputs", "instances")

    #: Every supported image or slide under this folder (recursively). Slides to segment
    #: live in ``data/09_inference/``, outside the DVC-versioned training data: a slide put
    #: there never becomes part of a dataset version or a retraining (docs/inference.md).
    input_dir: str = f"data/09_inference/{DEFAULT_DATASET}/slides"
    #: null: ``models:/<registry.model_name>@champion``, resolved to one version at start.
    model_uri: str | None = None
    #: Outputs go to ``<output_dir>/<model name>-v<version>/``.
    output_dir: str = f"data/09_inference/{DEFAULT_DATASET}/results"
    #: Tiles per forward pass.
    batch_size: int = 8
    #: null: the model's training patch.
    patch_size: int | None = None
    #: Skip tiles with no tissue on the thumbnail (Otsu on saturation).
    skip_background: bool = True
    #: Training pixel size (um/px); null: the model version's ``sa2.pixel_size_um`` tag.
    model_mpp: float | None = None
    #: Longer side of the overlay thumbnail.
    thumbnail_side: int = 1024
    #: Split the inputs over ``num_parts`` processes; this one takes part ``part_id``.
    num_parts: int = 1
    part_id: int = 0
    progress: bool = True

    #: torch CPU threads; 0 = automatic (runtime.threads: free cores, or $SA2_NUM_THREADS).
    num_threads: int = 0
    #: What runs the network: ``auto`` (the fastest engine and batch size whose masks
    #: agree with eager fp32, measured once per machine), ``torch``, ``onnxruntime`` or
    #: ``openvino`` (docs/inference.md). Also the served model's engine.
    engine: Engine = "auto"
    #: The files written per input besides the overlay and the CSVs (docs/inference.md):
    #: ``mask`` (PNG, or a pyramidal TIFF when large), ``ome`` (the mask as a pyramidal
    #: OME-TIFF with its pixel size, for QuPath, napari and OME tools), ``geojson`` (every
    #: object as a QuPath detection), ``labels`` (the uint32 instance-label OME-TIFF
    #: pyramid). The default is what a pathologist opens: objects and mask at scale.
    outputs: tuple[InferenceOutput, ...] = ("mask", "geojson", "ome")
    #: How objects are cut out of the mask: the rule and settings of evaluation
    #: (``conf/base/parameters_inference.yml`` sets ``${evaluation.instances}``).
    instances: InstanceConfig = field(default_factory=InstanceConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(set(self.outputs)) != len(self.outputs):
            raise ConfigError(f"inference.outputs lists an output twice: {list(self.outputs)}")
        if self.num_parts < 1 or not 0 <= self.part_id < self.num_parts:
            raise ConfigError(f"inference.part_id must be in [0, num_parts); got part_id="
                              f"{self.part_id}, num_parts={self.num_parts}")
        if self.batch_size < 1:
            raise ConfigError(f"inference.batch_size must be >= 1, got {self.batch_size}")
        if self.patch_size is not None and self.patch_size < 16:
            raise ConfigError(f"inference.patch_size must be >= 16 or null, "
                              f"got {self.patch_size}")
        if self.num_threads < 0:
            raise ConfigError(f"inference.num_threads must be >= 0, got {self.num_threads}")
        if self.model_mpp is not None and not (
                isinstance(self.model_mpp, int | float) and math.isfinite(self.model_mpp)
                and self.model_mpp > 0):
            raise ConfigError(f"inference.model_mpp (--model-mpp) must be a pixel size in "
                              f"um/px > 0, or null for the model's own; got {self.model_mpp!r}")

    def mask_settings(self) -> dict[str, Any]:
        """The fields that change a mask, by name (:data:`MASK_FIELDS`)."""
        return {name: dataclasses.asdict(value) if dataclasses.is_dataclass(value)
                else list(value) if isinstance(value, tuple) else value
                for name in self.MASK_FIELDS for value in [getattr(self, name)]}


#: The schema of every top-level key of ``conf/*/parameters*.yml``. ``baselines`` is a list
#: of :class:`ModelConfig` entries (see :func:`parse_models`).
PARAMETER_GROUPS: dict[str, type] = {
    "data_ingestion": IngestionConfig,
    "data_processing": ProcessingConfig,
    "model": ModelConfig,
    "baselines": ModelConfig,
    "training": TrainingConfig,
    "evaluation": EvaluationConfig,
    "registry": RegistryConfig,
    "retraining": RetrainingConfig,
    "reporting": ReportingConfig,
    "inference": InferenceConfig,
}


# --------------------------------------------------------------------------- start-up
def _check_models(params: dict[str, Any]) -> None:
    baselines = params.get("baselines")
    if baselines is not None and not isinstance(baselines, list | tuple):
        raise ConfigError(f"baselines must be a list of models, got {baselines!r}")

    for where, cfg in zip(["model", *(f"baselines[{i}]" for i in range(len(baselines or [])))],
                          parse_models(params.get("model"), baselines), strict=True):
        if cfg.name not in list_models():
            raise ConfigError(f"{where}.name = {cfg.name!r} is not a model; "
                              f"choose one of {list_models()}")


def validate_parameters(params: dict[str, Any]) -> None:
    """Check every parameter group of a run at once, before any node runs.

    Nodes parse their own groups again (cheap); this makes a typo fail in the first second
    of a run instead of after hours of training, including a misspelt group name
    (``trainin.epochs=1000``), which no node would ever read.

    Raises:
        ConfigError: one message listing every problem, each naming its key.
    """
    problems = []
    unknown = sorted(set(params) - set(PARAMETER_GROUPS))
    if unknown:
        problems.append(f"unknown parameter group(s) {unknown}; "
                        f"the groups are {sorted(PARAMETER_GROUPS)}")
    for group, schema in PARAMETER_GROUPS.items():
        if group in ("model", "baselines"):
            continue
        try:
            parse(schema, params.get(group), group)
        except ConfigError as err:
            problems.append(str(err))
    try:
        _check_models(params)
    except ConfigError as err:
        problems.append(str(err))
    if problems:
        raise ConfigError("invalid parameters:\n  - " + "\n  - ".join(problems))


# --------------------------------------------------------------------------- parsing
def parse(cls: type[T], data: dict[str, Any] | None, where: str) -> T:
    """Build the frozen dataclass ``cls`` from a parameter dict, rejecting unknown keys.

    Args:
        cls: A dataclass schema from this module.
        data: The parameter group as Kedro loaded it (``None`` means all defaults).
        where: The group's name for error messages, e.g. ``"training"``.

    Raises:
        ConfigError: On unknown keys, wrong types or illegal literal values.
    """
    if data is None:
        data = {}
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(data).__name__}: {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown key(s) {unknown} in {where}; allowed keys: {sorted(fields)}"
        )
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as err:  # pragma: no cover - dataclass signature mismatch
        raise ConfigError(f"{where}: {err}") from err


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = get_origin(tp)
    args = get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(args, value, where)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where} = {value!r} is not allowed; choose one of {list(args)}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return tuple(_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        return parse(tp, value, where)
    return _coerce_scalar(tp, value, where)


def _coerce_union(args: tuple[Any, ...], value: Any, where: str) -> Any:
    """The first member of ``X | Y | None`` that accepts ``value``, or every member's error."""
    if value is None and type(None) in args:
        return None
    errors = []
    for arg in (a for a in args if a is not type(None)):
        try:
            return _coerce(arg, value, where)
        except ConfigError as err:
            errors.append(str(err))
    raise ConfigError("; ".join(errors))


def _coerce_scalar(tp: Any, value: Any, where: str) -> Any:
    """bool, int, float and str checked strictly (``True`` is not an int); others as given."""
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    return value
