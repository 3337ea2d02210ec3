"""One typed configuration drives the CLI, the dashboard and the saved run.

A :class:`RunConfig` is plain values with defaults. It round-trips through JSON
(``config.json`` in every run folder), is filled from CLI flags and the dashboard's form,
and is validated in one place (:meth:`RunConfig.validate`) so every entry point rejects the
same bad values with the same message.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from .errors import InputError

# Class names with a meaning for the instance step (see impartial.instances): whole cells come
# from CELL_CLASSES, seeds from NUCLEUS_CLASSES. Other names are allowed and only exported.
CELL_CLASSES = ("cell", "cytoplasm", "nucleus_in_cytoplasm", "nucleus_out_of_cytoplasm")
NUCLEUS_CLASSES = ("nucleus", "nucleus_in_cytoplasm", "nucleus_out_of_cytoplasm")
Precision = Literal["auto", "float32", "bfloat16"]
SeedSource = Literal["core", "nuclei"]
InstanceMethod = Literal["watershed", "threshold"]
RecLoss = Literal["gaussian", "mixture"]
PresetName = Literal["quick", "full"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
SEED_SOURCES: tuple[str, ...] = get_args(SeedSource)
INSTANCE_METHODS: tuple[str, ...] = get_args(InstanceMethod)
REC_LOSSES: tuple[str, ...] = get_args(RecLoss)


@dataclass
class TaskConfig:
    """One segmentation problem: named foreground classes plus background.

    ``ncomponents`` lists the mixture components of each class, then of the background
    (length ``len(classes) + 1``). ``rec_channels`` are the input channels this task
    reconstructs at the blind spots.
    """

    name: str = "cells"
    classes: list[str] = field(default_factory=lambda: ["cell"])
    rec_channels: list[int] = field(default_factory=lambda: [0, 1])
    ncomponents: list[int] = field(default_factory=lambda: [2, 2])

    @property
    def n_classes(self) -> int:
        """Number of foreground classes."""
        return len(self.classes)

    @property
    def n_components(self) -> int:
        """K: components over all classes and the background."""
        return sum(self.ncomponents)

    @property
    def n_outputs(self) -> int:
        """Network output channels of this task: K logits plus K mean maps per reconstructed channel."""
        return self.n_components * (1 + len(self.rec_channels))

    @property
    def n_scribble_channels(self) -> int:
        """Scribble maps of this task: one per class, then one for background."""
        return self.n_classes + 1


@dataclass
class ModelConfig:
    """The U-Net's shape. ``dropout`` stays active at inference for MC dropout."""

    depth: int = 4
    base: int = 64
    dropout: float = 0.5


@dataclass
class TrainConfig:
    """Optimisation, sampling and stopping. Names follow the original's flags."""

    epochs: int = 100  # the run's length when max_minutes is 0
    patch: int = 128
    patches_per_epoch: int = 4096
    batch: int = 64
    lr: float = 5e-4
    weight_decay: float = 1e-4
    wfore: float = 0.45
    wback: float = 0.45
    wrec: float = 0.1
    wreg: float = 0.0
    wsep: float = 0.45  # weight of the cell-core loss that teaches touching cells apart (RunConfig.separation)
    core_margin: int = 2  # px: background strokes mark pixels this close to them as "not a cell core"
    # Weight of a background term on the gaps of touching cells alone (background-stroke pixels between two cell
    # strokes): the few pixels where the probability must dip for the watershed to find the border. 0 = off.
    wgap: float = 0.0
    # Share of the pixels where the stains are unambiguous (bright in the nuclear or a cell-filling stain: cell;
    # dark in all: background) added as automatic strokes away from the user's, on images with few cell strokes
    # (impartial.stainstrokes): a prior for runs with few strokes. 0 = only the user's strokes.
    stain_strokes: float = 0.1
    ratio: float = 0.95  # fraction of pixels per channel kept; 1 - ratio are blind spots
    blind_radius: int = 5  # neighbour offsets in [-radius, radius - 1], as the method's 10x10 window
    rec_loss: RecLoss = "gaussian"  # "gaussian" (the method's) or "mixture" (true mixture likelihood)
    scribble_fraction: float = 0.6  # share of patch centres drawn on scribbled pixels
    jitter: int = 32
    intensity_jitter: float = 0.3  # training patches' channels scaled by exp(U(-j, j)): robustness to stain levels
    val_fraction: float = 0.4  # side of the validation box relative to the image side
    val_patches: int = 64
    nsaves: int = 5  # checkpoint-ensemble cycles
    patience: int = 10  # epochs without validation improvement before a cycle ends (with a budget: not the last)
    max_minutes: float = 0.0  # time budget: the run trains this long and epochs is ignored; 0 = none
    # start from the weights pretrained on synthetic tissue when they fit (impartial.prior). Off: on Vectra a minute
    # of drawing scored 0.015-0.022 lower with it; on the demo's synthetic tissue it steadies a few strokes (README)
    prior: bool = False
    preview_every: int = 5  # epochs between preview predictions; 0 = never
    seed: int = 0
    device: str = "auto"  # "auto" (CUDA when present), "cuda", "cuda:N" or "cpu"
    threads: int = 0  # CPU threads for torch; 0 = torch's default
    # "auto": bfloat16 convolutions where the device computes them natively (recent x86 CPUs, most GPUs),
    # float32 elsewhere; "float32" or "bfloat16" to choose. Losses and statistics stay float32.
    precision: Precision = "auto"


@dataclass
class PredictConfig:
    """Tiled prediction with MC dropout over the checkpoint ensemble."""

    mcdrop: int = 10  # dropout passes per checkpoint
    tile: int = 512
    overlap: int = 64
    batch: int = 4  # dropout passes of one tile run through the network at once (bounds the memory)
    flips: bool = True  # the passes see the tile mirrored in turn (test-time augmentation at no extra cost)


@dataclass
class InstanceConfig:
    """How probabilities become cell instances (see impartial.instances)."""

    method: InstanceMethod = "watershed"  # "watershed" (nucleus-seeded) or "threshold" (the method's own step)
    threshold: float = 0.5  # probability threshold; replaced by the validated one after training
    nucleus_threshold: float = 0.5
    core_threshold: float = 0.5  # seeds are the components of core probability above it (runs with separation)
    # "core": cell cores where the run predicts them; "nuclei": predicted nuclei, else nuclear-channel blobs, else
    # distance peaks. A run chooses on its held-out strokes (impartial.separation.choose_seeds).
    seeds: SeedSource = "core"
    membrane_channel: int | None = 0  # landscape for the watershed; None = use 1 - cell probability
    # The membrane channel's stain fills cells (a cytoplasm stain): its dark lines, not its bright ones, are the
    # borders. Each run decides it on its own images when training ends (impartial.calibrate).
    membrane_fills_cells: bool = False
    # Cells show some stain: the cell probability counts only where the nuclear or membrane channel is not dark
    # (impartial.instances.stained). Each run decides it when training ends: on when its cell strokes lie in stain.
    cells_show_stain: bool = False
    nuclear_channel: int | None = 1  # seeds when no nucleus class is predicted; None = distance peaks
    min_size: int = 5
    grow: int = 1
    # The watershed's landscape rises this much per pixel of distance to the nearest seed, so a cell whose border
    # the probability does not show stops about halfway to the next seed (0 = the landscape alone). Chosen on
    # saved Vectra and demo predictions (bench_cross_image.py).
    compactness: float = 0.04


@dataclass
class RunConfig:
    """Everything a run needs; saved as ``config.json`` beside its checkpoints."""

    channels: list[str] = field(default_factory=lambda: ["membrane", "nuclear"])
    tasks: list[TaskConfig] = field(default_factory=lambda: [TaskConfig()])
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    instances: InstanceConfig = field(default_factory=InstanceConfig)
    preset: PresetName = "full"
    # One more output, the cell-core probability (a cell's interior away from its border), learned from the
    # scribbles to tell touching cells apart and seed the watershed (see impartial.separation). Off by default:
    # on unseen Vectra tissue it scored below the nucleus-seeded watershed (README, bench_cross_image.py).
    separation: bool = False

    @property
    def n_channels(self) -> int:
        return len(self.channels)

    @property
    def n_task_outputs(self) -> int:
        """Output channels of the tasks (logits and mean maps), before the separation output."""
        return sum(task.n_outputs for task in self.tasks)

    @property
    def n_outputs(self) -> int:
        """Network output channels: the tasks', then one cell-core logit when ``separation`` is on."""
        return self.n_task_outputs + int(self.separation)

    @property
    def n_scribble_channels(self) -> int:
        return sum(task.n_scribble_channels for task in self.tasks)

    @property
    def class_names(self) -> list[str]:
        """Foreground class names over all tasks, in output order."""
        return [name for task in self.tasks for name in task.classes]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        """Build from a (possibly partial) dict; unknown keys are an error, missing ones take defaults."""
        values = dict(values)
        tasks = [_build(TaskConfig, task, "tasks") for task in values.pop("tasks", [dataclasses.asdict(TaskConfig())])]
        sections = {
            name: _build(kind, values.pop(name, {}), name)
            for name, kind in (("model", ModelConfig), ("train", TrainConfig),
                               ("predict", PredictConfig), ("instances", InstanceConfig))
        }
        config = _build(cls, {**values, "tasks": [], **sections}, "config")
        config.tasks = tasks
        return config

    def save(self, path: str | Path) -> None:
        from .storage import write_json

        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        """A config file; missing settings take today's defaults."""
        return cls._checked(_read_json(path), path)

    @classmethod
    def load_run(cls, path: str | Path) -> RunConfig:
        """A run folder's saved config: a setting added after the file was written takes the value the run was
        trained with (``SETTINGS_ADDED_SINCE``), not today's default, so a resumed run goes on as it began."""
        values = _read_json(path)
        for (section, name), before in SETTINGS_ADDED_SINCE.items():
            if isinstance(values.get(section, {}), dict):  # anything else is reported by _checked
                values.setdefault(section, {}).setdefault(name, before)
        return cls._checked(values, path)

    @classmethod
    def _checked(cls, values: dict[str, Any], path: str | Path) -> RunConfig:
        try:
            return cls.from_dict(values).validate()
        except InputError as error:
            raise InputError(error.problem, path) from error

    def validate(self) -> RunConfig:
        """Check every value; raise :class:`InputError` naming the first bad one. Returns self."""
        problems = list(_problems(self))
        if problems:
            raise InputError("invalid configuration: " + "; ".join(problems))
        return self


# Settings added after runs were first saved, and the value that reproduces a run saved before them.
SETTINGS_ADDED_SINCE = {("train", "stain_strokes"): 0.0}


def _read_json(path: str | Path) -> dict[str, Any]:
    try:
        values = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise InputError(f"cannot read the config: {error}", path) from error
    if not isinstance(values, dict):
        raise InputError("the config must be a JSON object of settings", path)
    return values


def _build(kind: type, values: dict[str, Any], section: str) -> Any:
    if not isinstance(values, dict):
        raise InputError(f"section '{section}' must be a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(kind)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise InputError(f"unknown key(s) in '{section}': {', '.join(unknown)}")
    for name, value in values.items():
        annotation = "str" if fields[name].type in _CHOICES else fields[name].type
        expected = _SCALAR_TYPES.get(annotation)
        if expected is not None and not _is_a(value, expected):
            raise InputError(f"'{section}.{name}' must be {annotation}, got {value!r}")
    return kind(**values)


# The annotation of a plain setting (fields are annotated as strings under ``from __future__ import annotations``)
# -> the Python types its value may have in a config file.
_SCALAR_TYPES: dict[str, tuple[type, ...]] = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}
# Settings that take one of a few names: strings in a config file, checked against their names by validate().
_CHOICES = {"Precision", "SeedSource", "InstanceMethod", "RecLoss", "PresetName"}


def _is_a(value: Any, types: tuple[type, ...]) -> bool:
    """isinstance, except that True / False are not numbers here."""
    return isinstance(value, types) and (bool in types or not isinstance(value, bool))


def _problems(config: RunConfig):
    if not config.channels:
        yield "at least one channel is needed"
    if not config.tasks:
        yield "at least one task is needed"
    names = config.class_names
    if len(set(names)) != len(names):
        yield f"class names must be unique across tasks, got {names}"
    for index, task in enumerate(config.tasks):
        where = f"task {index} ('{task.name}')"
        if not task.classes:
            yield f"{where} needs at least one class"
        if len(task.ncomponents) != task.n_classes + 1:
            yield (f"{where}: ncomponents needs {task.n_classes + 1} entries (classes then background), "
                   f"got {task.ncomponents}")
        if any(n < 1 for n in task.ncomponents):
            yield f"{where}: every class needs at least one component"
        if any(not 0 <= c < config.n_channels for c in task.rec_channels):
            yield f"{where}: rec_channels {task.rec_channels} must index the {config.n_channels} channels"
    from .device import is_device_choice  # here, not at the top: the CLI's --help should not wait for torch

    model, train, predict = config.model, config.train, config.predict
    for name, section in (("train", train), ("predict", predict), ("instances", config.instances)):
        for item in dataclasses.fields(section):
            value = getattr(section, item.name)
            if isinstance(value, float) and not math.isfinite(value):
                yield f"{name}.{item.name} must be finite, got {value}"
    checks = [
        (model.depth >= 1, "model.depth must be at least 1"),
        (model.base >= 1, "model.base must be at least 1"),
        (0.0 <= model.dropout < 1.0, "model.dropout must be in [0, 1)"),
        (train.epochs >= 1, "train.epochs must be at least 1"),
        (train.patch >= 2 ** model.depth and train.patch % (2 ** model.depth) == 0,
         f"train.patch must be a multiple of 2**depth = {2 ** model.depth}"),
        (train.batch >= 1, "train.batch must be at least 1"),
        (train.patches_per_epoch >= train.batch, "train.patches_per_epoch must be at least train.batch"),
        (train.lr > 0, "train.lr must be positive"),
        (min(train.wfore, train.wback, train.wrec, train.wreg, train.wsep, train.wgap) >= 0,
         "loss weights must be non-negative"),
        (train.core_margin >= 0, "train.core_margin must be non-negative"),
        (0.0 <= train.stain_strokes <= 1.0, "train.stain_strokes must be in [0, 1]"),
        (0.0 < train.ratio < 1.0, "train.ratio must be in (0, 1)"),
        (train.blind_radius >= 1, "train.blind_radius must be at least 1"),
        (train.patch > 2 * train.blind_radius, "train.patch must be larger than 2 * train.blind_radius"),
        (train.rec_loss in REC_LOSSES, "train.rec_loss must be 'gaussian' or 'mixture'"),
        (0.0 <= train.scribble_fraction <= 1.0, "train.scribble_fraction must be in [0, 1]"),
        (0.0 < train.val_fraction < 1.0, "train.val_fraction must be in (0, 1)"),
        (train.nsaves >= 1, "train.nsaves must be at least 1"),
        (train.patience >= 1, "train.patience must be at least 1"),
        (train.max_minutes >= 0, "train.max_minutes must be non-negative"),
        (train.threads >= 0, "train.threads must be 0 (torch's default) or a positive number of threads"),
        (train.seed >= 0, "train.seed must be non-negative"),
        (is_device_choice(train.device),
         "train.device must be 'auto', 'cpu', 'cuda' or 'cuda:N'"),
        (train.precision in PRECISIONS, f"train.precision must be one of {', '.join(PRECISIONS)}"),
        (predict.mcdrop >= 1, "predict.mcdrop must be at least 1"),
        (predict.batch >= 1, "predict.batch must be at least 1"),
        (predict.tile >= 2 ** model.depth and predict.tile % (2 ** model.depth) == 0,
         f"predict.tile must be a multiple of 2**depth = {2 ** model.depth}"),
        (0 <= predict.overlap < predict.tile // 2, "predict.overlap must be in [0, tile / 2)"),
        (config.instances.method in INSTANCE_METHODS, "instances.method must be 'watershed' or 'threshold'"),
        (0.0 < config.instances.threshold < 1.0, "instances.threshold must be in (0, 1)"),
        (0.0 < config.instances.core_threshold < 1.0, "instances.core_threshold must be in (0, 1)"),
        (config.instances.seeds in SEED_SOURCES, f"instances.seeds must be one of {', '.join(SEED_SOURCES)}"),
        (config.preset in get_args(PresetName), f"preset must be one of {', '.join(get_args(PresetName))}"),
    ]
    yield from (message for ok, message in checks if not ok)


# --- task presets --------------------------------------------------------------------------

def whole_cell_tasks() -> list[TaskConfig]:
    """Default: one task, whole cells, reconstructing both channels."""
    return [TaskConfig(name="cells", classes=["cell"], rec_channels=[0, 1], ncomponents=[2, 2])]


def vectra_tasks() -> list[TaskConfig]:
    """MIBI / Vectra 2-channel setting: cytoplasm, then nuclei inside and outside cytoplasm."""
    return [
        TaskConfig(name="cytoplasm", classes=["cytoplasm"], rec_channels=[0], ncomponents=[2, 2]),
        TaskConfig(name="nuclei", classes=["nucleus_in_cytoplasm", "nucleus_out_of_cytoplasm"],
                   rec_channels=[1], ncomponents=[1, 1, 2]),
    ]


def tissuenet_tasks() -> list[TaskConfig]:
    """TissueNet setting: whole cells and nuclei as two tasks."""
    return [
        TaskConfig(name="cells", classes=["cell"], rec_channels=[0, 1], ncomponents=[2, 2]),
        TaskConfig(name="nuclei", classes=["nucleus"], rec_channels=[1], ncomponents=[1, 2]),
    ]


TASK_PRESETS = {"whole_cell": whole_cell_tasks, "vectra": vectra_tasks, "tissuenet": tissuenet_tasks}


# --- run presets ---------------------------------------------------------------------------

def quick_config(**overrides: Any) -> RunConfig:
    """CPU, interactive: a small U-Net and short epochs, so a preview arrives within seconds."""
    config = RunConfig(
        model=ModelConfig(depth=3, base=12, dropout=0.2),
        train=TrainConfig(epochs=40, patch=128, patches_per_epoch=256, batch=16, lr=2e-3, nsaves=3,
                          patience=8, preview_every=2, val_patches=32),
        predict=PredictConfig(mcdrop=4, tile=512, overlap=32, batch=2),
        preset="quick",
    )
    return apply_overrides(config, overrides)


def full_config(**overrides: Any) -> RunConfig:
    """The paper's settings (GPU): depth 4, base 64, 4096 patches of 128 px per epoch."""
    return apply_overrides(RunConfig(preset="full"), overrides)


PRESETS: dict[PresetName, Any] = {"quick": quick_config, "full": full_config}


def preset_config(name: str, tasks: str | list[TaskConfig] = "whole_cell", **overrides: Any) -> RunConfig:
    """A run preset (``quick`` / ``full``) with a task preset or explicit tasks."""
    if name not in PRESETS:
        raise InputError(f"unknown preset '{name}' (choose from {', '.join(PRESETS)})")
    if isinstance(tasks, str):
        if tasks not in TASK_PRESETS:
            raise InputError(f"unknown task preset '{tasks}' (choose from {', '.join(TASK_PRESETS)})")
        tasks = TASK_PRESETS[tasks]()
    config = PRESETS[name](**overrides)
    config.tasks = tasks
    return config.validate()


def apply_overrides(config: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """Apply ``section.field`` or top-level overrides, e.g. ``{"train.epochs": 3}``."""
    for key, value in overrides.items():
        section, _, name = key.rpartition(".")
        target = getattr(config, section) if section else config
        if not hasattr(target, name):
            raise InputError(f"unknown setting '{key}'")
        setattr(target, name, value)
    return config
