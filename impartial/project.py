"""The dashboard's on-disk store: one project is one folder, reopened exactly as it was left.

```
<data_root>/projects/<name>/project.json     name, owner, shared, channels, colors, contrast, tasks, created
                            settings.json    the last RunConfig used on the Train page
                            images/<image>.tif       raw (C, H, W) float32
                            labels/<image>.tif       (H, W) int32 instances (optional)
                            scribbles/<image>.npz    scribble (H, W, S) uint8, optional val_mask (H, W) bool
                            history/<image>/         edits of the scribbles, for undo (see strokes.py)
                            suggestions/<image>.json suggested regions marked done or skipped
                            runs/<run_id>/           run folders written by the Trainer
                            predictions/<run_id>/    exported segmentations
```

Every write goes through :mod:`impartial.storage` (atomic). Names that reach the file system
pass :func:`safe_name`, so an upload called ``../../etc/passwd`` lands as ``passwd`` inside the
project. Who sees a project is decided by :func:`impartial.access.can_open` (owner, shared flag;
``user=None`` means access control is off and everyone sees everything).
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import math
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
import unicodedata
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import filelock
import numpy as np
import tifffile

from . import io, scribbles, storage, strokes
from .access import can_open
from .config import RunConfig, TaskConfig, preset_config
from .dataset import TrainingImage
from .errors import InputError
from .export import save_label_tiff
from .runs import read_status

log = logging.getLogger(__name__)

DEFAULT_DATA_ROOT = Path("impartial-data")
DATA_ROOT_ENV = "IMPARTIAL_DATA"
IMPORT_ROOTS_ENV = "IMPARTIAL_IMPORT_ROOTS"
IMPORTS_DIR = "imports"  # <data root>/imports: a drop folder every user may import from
IMAGES_LOCK_FILE = ".images.lock"  # held while a new image's name is chosen and its file written
PROJECTS_DIR = "projects"
META_FILE = "project.json"
SETTINGS_FILE = "settings.json"
DEFAULT_COLORS = ("#00ff00", "#0080ff", "#ff0000", "#ffff00", "#ff00ff", "#00ffff", "#ffffff")
DEFAULT_CONTRAST = (1.0, 99.8)
MAX_NAME_LENGTH = 100
NORMALIZED_CACHE_SIZE = 8  # normalised images kept in memory per Project (a few full-size images)
FILE_CHECK_CACHE_SIZE = 4096  # results of damaged-file checks kept per process, keyed by path, time and size
DELETED_FOLDER = "deleted"  # under the data root: deleted projects, out of every list, recoverable by hand
SCRIBBLE_CACHE_SIZE = 8  # decoded scribble files kept per process: a stroke rereads the file it just wrote
_UNSAFE_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]")
_HEX_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")


# --- names and locations ----------------------------------------------------------------------

def data_root_from_env(cli_value: str | Path | None = None) -> Path:
    """The data root: the CLI flag when given, else ``$IMPARTIAL_DATA``, else ``impartial-data``."""
    if cli_value:
        return Path(cli_value)
    return Path(os.environ.get(DATA_ROOT_ENV) or DEFAULT_DATA_ROOT)


def safe_name(filename: str) -> str:
    """A file name that stays inside its folder: no directories, only ``[A-Za-z0-9._-]``.

    Directories (``/`` or ``\\``) are dropped, accents lose their marks (``é`` -> ``e``), spaces and
    other characters become ``_``, leading dots go (no hidden files). Raises InputError when
    nothing usable is left (empty, ``.``, ``..``).
    """
    base = str(filename).replace("\\", "/").rsplit("/", 1)[-1]
    decomposed = unicodedata.normalize("NFKD", base)
    without_marks = "".join(char for char in decomposed if not unicodedata.combining(char))
    name = _UNSAFE_CHARACTERS.sub("_", without_marks).lstrip(".")[-MAX_NAME_LENGTH:]
    if not name.strip("._-"):
        raise InputError("not a usable file name", str(filename) or "''")
    return name


def projects_root(data_root: str | Path) -> Path:
    return Path(data_root) / PROJECTS_DIR


def check_importable(path: str | Path, data_root: str | Path, user: str, import_roots: Iterable[Path] = ()) -> Path:
    """The resolved ``path`` when ``user`` may import it on a shared server; InputError otherwise.

    Importable: folders and files inside a project the user may open (see impartial.access.can_open), inside
    ``<data root>/imports`` (a drop folder for everyone), or inside a folder an administrator lists in
    ``$IMPARTIAL_IMPORT_ROOTS``. Links are resolved first, so none leads into another user's private project.
    """
    resolved = Path(path).expanduser().resolve()
    projects = projects_root(data_root).resolve()
    if resolved.is_relative_to(projects) and resolved != projects:
        name = resolved.relative_to(projects).parts[0]
        meta_path = projects / name / META_FILE
        if meta_path.exists() and can_open(json.loads(meta_path.read_text()), user):
            return resolved
        raise InputError("this folder belongs to a project you cannot open", path)
    allowed = [Path(data_root).resolve() / IMPORTS_DIR, *(Path(root).resolve() for root in import_roots)]
    if any(resolved.is_relative_to(root) for root in allowed):
        return resolved
    raise InputError("on a shared server only your projects' folders, " + ", ".join(str(root) for root in allowed)
                     + " can be imported", path)


def import_roots_from_environment() -> list[Path]:
    """Folders an administrator lists as importable, ``$IMPARTIAL_IMPORT_ROOTS`` (separated by ``os.pathsep``)."""
    return [Path(part) for part in os.environ.get(IMPORT_ROOTS_ENV, "").split(os.pathsep) if part.strip()]


@dataclass(frozen=True)
class ProjectInfo:
    """What the project list shows without opening a project."""

    name: str
    dir: Path
    owner: str | None
    shared: bool
    created: float
    channels: list[str]
    n_images: int


@dataclass(frozen=True)
class RunInfo:
    """One run folder of a project; ``status`` as :func:`impartial.runs.read_status` reads it."""

    id: str
    dir: Path
    status: dict[str, Any]


def _read_meta(folder: Path) -> dict[str, Any]:
    path = folder / META_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise InputError(f"cannot read the project file: {error}", path) from error


def _checked_project_name(name: str) -> str:
    if not name.strip():
        raise InputError("give the project a name (letters, digits, '.', '_' and '-')")
    if safe_name(name) != name:
        suggestion = f" (try '{safe_name(name)}')" if name and name.strip("._-") else ""
        raise InputError(f"a project name may only use letters, digits, '.', '_' and '-'{suggestion}", name)
    return name


# --- creating, opening, listing -----------------------------------------------------------------

def create_project(data_root: str | Path, name: str, channels: list[str], tasks: list[TaskConfig],
                   owner: str | None = None, shared: bool = False,
                   fill: Callable[[Project], None] | None = None) -> Project:
    """Make a new project folder. InputError when the name is bad or taken, or tasks do not fit channels.

    With ``fill``, the project is built in a hidden folder, filled by ``fill`` and renamed into place, so a crash
    never leaves half a project behind and nobody sees it before it is complete.
    """
    folder = projects_root(data_root) / _checked_project_name(name)
    meta = _new_meta(name, channels, tasks, owner, shared)
    if fill is None:
        _write_new_project(folder, meta)
        return Project(folder)
    building = folder.with_name(f".{name}.building-{secrets.token_hex(4)}")
    try:
        _write_new_project(building, meta)
        fill(Project(building))
        try:
            building.rename(folder)
        except OSError as error:
            raise InputError("a project with this name exists already", name) from error
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return Project(folder)


def _new_meta(name: str, channels: list[str], tasks: list[TaskConfig], owner: str | None,
              shared: bool) -> dict[str, Any]:
    config = RunConfig(channels=list(channels), tasks=list(tasks)).validate()
    return {"name": name, "owner": owner, "shared": bool(shared), "channels": config.channels,
            "colors": _default_colors(len(channels)), "contrast": [list(DEFAULT_CONTRAST)] * len(channels),
            "tasks": config.to_dict()["tasks"], "created": time.time()}


def _write_new_project(folder: Path, meta: dict[str, Any]) -> None:
    """Create the folder with its project.json; InputError if another session created it first."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        folder.mkdir()
    except FileExistsError as error:
        raise InputError("a project with this name exists already", meta["name"]) from error
    storage.write_json(folder / META_FILE, meta)


def delete_project(data_root: str | Path, name: str, user: str | None = None) -> Path:
    """Take a project out of the list by moving its folder to ``<data root>/deleted/<name>-<time>``, from where an
    administrator can move it back; returns that folder.

    Only the owner may delete a project (anyone when access control is off or the project has no owner);
    PermissionError otherwise. InputError while one of its runs is training.
    """
    project = open_project(data_root, name, user=user)
    if user is not None and project.owner not in (None, user):
        raise PermissionError("only the project's owner may delete it")
    if any(info.status.get("state") == "running" for info in project.runs()):
        raise InputError("one of its runs is training: stop it first", name)
    target = Path(data_root) / DELETED_FOLDER / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(project.dir, target)
    return target


def open_project(data_root: str | Path, name: str, user: str | None = None) -> Project:
    """Open a project by name; InputError when missing, PermissionError when ``user`` may not see it."""
    folder = projects_root(data_root) / _checked_project_name(name)
    if not (folder / META_FILE).exists():
        raise InputError("no such project", name)
    project = Project(folder)
    if not can_open(project.meta, user):
        raise PermissionError(f"project '{name}' belongs to {project.owner} and is not shared")
    return project


def list_projects(data_root: str | Path, user: str | None = None) -> list[ProjectInfo]:
    """The projects ``user`` may see (all of them when ``user`` is None), sorted by name."""
    root = projects_root(data_root)
    if not root.is_dir():
        return []
    infos = []
    for folder in sorted(root.iterdir()):
        if folder.name.startswith(".") or not (folder / META_FILE).is_file():
            continue  # half-built demo folders and strays
        try:
            meta = _read_meta(folder)
        except InputError as error:  # one damaged project must not hide the others
            log.warning("skipping project folder: %s", error)
            continue
        if can_open(meta, user):
            infos.append(ProjectInfo(name=meta["name"], dir=folder, owner=meta.get("owner"),
                                     shared=bool(meta.get("shared")), created=float(meta.get("created", 0)),
                                     channels=list(meta["channels"]), n_images=len(_stems(folder / "images", ".tif"))))
    return infos


def _default_colors(n_channels: int) -> list[str]:
    return [DEFAULT_COLORS[index % len(DEFAULT_COLORS)] for index in range(n_channels)]


def _stems(folder: Path, suffix: str) -> list[str]:
    """Sorted stems of ``folder/*suffix``, leaving out hidden (temporary) files."""
    if not folder.is_dir():
        return []
    return sorted(path.stem for path in folder.glob(f"*{suffix}") if not path.name.startswith("."))


@contextlib.contextmanager
def _decoding(path: Path, what: str) -> Iterator[None]:
    """Turn any failure to decode ``path`` into a one-line InputError naming the file.

    Readers of tifffile, numpy, zipfile and json raise many unrelated types on damaged input; our own
    InputError passes through, a missing file stays FileNotFoundError (the caller decides what that means).
    """
    try:
        yield
    except (InputError, FileNotFoundError):
        raise
    except Exception as error:
        detail = (str(error).strip().splitlines() or [""])[0][:200]
        raise InputError(f"cannot read {what} ({type(error).__name__}: {detail})", path) from error


def _tiff_extent(path: Path, what: str) -> tuple[int, ...]:
    """The first series' shape of a TIFF, from its headers; InputError when a header is damaged or the
    pixel data the headers point to lies beyond the end of the file (a truncated copy)."""
    size = path.stat().st_size
    with _decoding(path, what), tifffile.TiffFile(path) as tif:
        shape = tuple(int(n) for n in tif.series[0].shape)
        end = max((offset + count for page in tif.pages
                   for offset, count in zip(page.dataoffsets, page.databytecounts, strict=False)), default=0)
    if end > size:
        raise InputError(f"{what} is cut off: {size} of {end} bytes", path)
    return shape


def _modified(path: Path) -> int | None:
    """Modification time (ns) of ``path``; None when it is missing."""
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return None


def _stat_key(path: Path) -> tuple[str, int, int] | None:
    """(path, modification time, size): what a cached check of the file depends on; None when it is missing."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return str(path), stat.st_mtime_ns, stat.st_size


_file_checks: dict[tuple, InputError | None] = {}
_scribble_files: collections.OrderedDict[tuple, dict[str, np.ndarray]] = collections.OrderedDict()
_scribble_files_lock = threading.Lock()


def _unique(name: str, taken: Iterable[str]) -> str:
    """``name``, or ``name_2``, ``name_3``, ... when taken."""
    taken = set(taken)
    candidates = (name if index == 1 else f"{name}_{index}" for index in range(1, len(taken) + 2))
    return next(candidate for candidate in candidates if candidate not in taken)


# --- the project --------------------------------------------------------------------------------

class Project:
    """One project folder. Cheap to create: state lives on disk, so a new object sees everything."""

    def __init__(self, folder: str | Path) -> None:
        self.dir = Path(folder)
        self.meta: dict[str, Any] = _read_meta(self.dir)
        self._normalized: collections.OrderedDict[str, tuple[int, np.ndarray]] = collections.OrderedDict()

    # --- metadata ---------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.meta["name"]

    @property
    def data_root(self) -> Path:
        """The data root holding this project (``<data_root>/projects/<name>``)."""
        return self.dir.parent.parent

    @property
    def owner(self) -> str | None:
        return self.meta.get("owner")

    @property
    def shared(self) -> bool:
        return bool(self.meta.get("shared"))

    @property
    def channels(self) -> list[str]:
        return list(self.meta["channels"])

    @property
    def colors(self) -> list[str]:
        return list(self.meta["colors"])

    @property
    def contrast(self) -> list[list[float]]:
        return [list(pair) for pair in self.meta["contrast"]]

    @property
    def tasks(self) -> list[TaskConfig]:
        return RunConfig.from_dict({"tasks": self.meta["tasks"]}).tasks

    @property
    def n_scribble_channels(self) -> int:
        return sum(task.n_scribble_channels for task in self.tasks)

    @property
    def pixel_size_um(self) -> float | None:
        """The side of a pixel in µm (the same for all the project's images), None when unknown."""
        return self.meta.get("pixel_size_um")

    def set_pixel_size(self, microns: float | None) -> None:
        """Set the pixel size in µm (None: unknown); the per-cell tables then give areas in µm² too."""
        if microns is not None and not (isinstance(microns, int | float) and math.isfinite(microns) and microns > 0):
            raise InputError(f"the pixel size must be a positive number of µm, got {microns!r}", self.name)
        self._save_meta(pixel_size_um=None if microns is None else float(microns))

    def _save_meta(self, **changes: Any) -> None:
        meta = {**self.meta, **changes}
        storage.write_json(self.dir / META_FILE, meta)
        self.meta = meta

    def set_shared(self, shared: bool) -> None:
        """Share the project with every user (or stop sharing it)."""
        self._save_meta(shared=bool(shared))

    def set_channels(self, names: list[str], colors: list[str] | None = None,
                     contrast: list[list[float]] | None = None) -> None:
        """Rename channels and set their display colours (``#rrggbb``) and contrast percentiles ``[lo, hi]``.

        The number of names must match the images already in the project.
        """
        names = [str(name) for name in names]
        colors = _default_colors(len(names)) if colors is None else list(colors)
        contrast = [list(DEFAULT_CONTRAST)] * len(names) if contrast is None else [list(p) for p in contrast]
        if self.images() and len(names) != len(self.channels):
            raise InputError(f"the images have {len(self.channels)} channel(s); got {len(names)} names", self.name)
        if len(colors) != len(names) or len(contrast) != len(names):
            raise InputError("give one colour and one contrast range per channel", self.name)
        bad_colors = [color for color in colors if not _HEX_COLOR.match(str(color))]
        if bad_colors:
            raise InputError(f"colours must look like #00ff00, got {bad_colors}", self.name)
        if any(len(pair) != 2 or not 0 <= pair[0] < pair[1] <= 100 for pair in contrast):
            raise InputError(f"contrast ranges must be percentiles 0 <= low < high <= 100, got {contrast}", self.name)
        RunConfig(channels=names, tasks=self.tasks).validate()
        self._save_meta(channels=names, colors=colors, contrast=[[float(lo), float(hi)] for lo, hi in contrast])

    def set_tasks(self, tasks: list[TaskConfig], reset_scribbles: bool = False) -> None:
        """Change the tasks. When their classes change, existing scribbles no longer fit their channels:
        refused with InputError unless ``reset_scribbles`` (then every scribble and its history is deleted)."""
        config = RunConfig(channels=self.channels, tasks=list(tasks)).validate()
        layout_changes = [task.classes for task in config.tasks] != [task.classes for task in self.tasks]
        scribbled = _stems(self.dir / "scribbles", ".npz")
        if layout_changes and scribbled:
            if not reset_scribbles:
                raise InputError(f"{len(scribbled)} image(s) have scribbles for the current classes; "
                                 "changing the classes deletes them (confirm to reset scribbles)", self.name)
            for image in scribbled:
                self._remove_annotations(image)
        self._save_meta(tasks=config.to_dict()["tasks"])

    def config_defaults(self) -> RunConfig:
        """The last settings used here (settings.json), else the quick preset; always with this project's
        channels and tasks."""
        path = self.dir / SETTINGS_FILE
        config = RunConfig.load(path) if path.exists() else preset_config("quick", tasks=self.tasks)
        config.channels, config.tasks = self.channels, self.tasks
        if config.instances.nuclear_channel is not None and config.instances.nuclear_channel >= config.n_channels:
            config.instances.nuclear_channel = None  # one-channel projects: seeds from distance peaks
        return config.validate()

    def save_settings(self, config: RunConfig) -> None:
        """Remember the Train page's settings for the next visit."""
        storage.write_json(self.dir / SETTINGS_FILE, config.validate().to_dict())

    # --- images -----------------------------------------------------------------------------

    def _path(self, kind: str, image: str, suffix: str) -> Path:
        return self.dir / kind / f"{image}{suffix}"

    def _require(self, image: str) -> Path:
        path = self._path("images", image, ".tif")
        if safe_name(image) != image or not path.exists():
            raise InputError(f"no image named '{image}' in project {self.name}")
        return path

    def images(self) -> list[str]:
        """Names of the project's images, sorted."""
        return _stems(self.dir / "images", ".tif")

    def add_image(self, filename: str, data: bytes, replace: bool = False) -> str:
        """Store an uploaded file as a project image; returns its name (the safe stem).

        When the name is taken the image is kept beside the other under a new name (``name_2``), or with
        ``replace`` takes the old one's place: the old image's labels, scribbles and their history go with it.
        Raises InputError naming ``filename`` when the file is empty, unreadable, or has another
        channel count than the project's images (the first image may set the count).
        """
        image = self.read_upload(filename, data)
        return self._store_image(Path(safe_name(filename)).stem, image, filename, replace)

    def add_images(self, files: list[tuple[str, bytes]],
                   replace: bool = False) -> tuple[list[str], list[InputError]]:
        """Add every readable file (``replace`` as in :meth:`add_image`); returns the names and one InputError per
        file that failed."""
        names, errors = [], []
        for filename, data in files:
            try:
                names.append(self.add_image(filename, data, replace))
            except InputError as error:
                errors.append(error)
        return names, errors

    def read_upload(self, filename: str, data: bytes) -> np.ndarray:
        """An uploaded file as a raw (C, H, W) image with the project's channel count, not stored in the project
        (predicting an image without adding it). InputError naming ``filename`` as :meth:`add_image` does."""
        if not data:
            raise InputError("the file is empty", filename)
        with _uploaded(filename, data) as path:
            return self._read_upload(path, filename)

    def _read_upload(self, path: Path, filename: str) -> np.ndarray:
        n_channels = len(self.channels) if self.images() else None
        try:
            return io.read_image(path, n_channels=n_channels)
        except InputError as error:
            raise InputError(error.problem, filename) from error
        except (OSError, ValueError) as error:  # io turns known problems into InputError; this is the safety net
            raise InputError(f"cannot read the image: {error}", filename) from error

    def _store_image(self, stem: str, image: np.ndarray, source: str, replace: bool = False) -> str:
        """Write a raw (C, H, W) image under a fresh name (or over ``stem`` with ``replace``); the first image may
        set the channel count."""
        image = np.asarray(image, dtype=np.float32)
        if image.ndim != 3:
            raise InputError(f"expected a (channels, height, width) image, got shape {image.shape}", source)
        if not self.images():
            self._fit_channels(image.shape[0], source)
        elif image.shape[0] != len(self.channels):
            raise InputError(f"has {image.shape[0]} channel(s), the project's images have {len(self.channels)}",
                             source)
        # choosing a free name and taking it is one step: two uploads of one file name at once get two names
        with filelock.FileLock(self.dir / IMAGES_LOCK_FILE):
            name = stem if replace else _unique(stem, self.images())
            if name in self.images():
                self._path("labels", name, ".tif").unlink(missing_ok=True)
                self._remove_annotations(name)
                self._normalized.pop(name, None)
            io.write_image_tiff(self._path("images", name, ".tif"), image)
        return name

    def _fit_channels(self, n_channels: int, source: str) -> None:
        """Adopt the first image's channel count, keeping the given names and naming any extra ones."""
        if n_channels == len(self.channels):
            return
        names = (self.channels + [f"channel {index + 1}" for index in range(len(self.channels), n_channels)])
        try:
            RunConfig(channels=names[:n_channels], tasks=self.tasks).validate()
        except InputError as error:
            raise InputError(f"has {n_channels} channel(s), which the project's tasks cannot use: {error.problem}",
                             source) from error
        self.set_channels(names[:n_channels], (self.colors + _default_colors(n_channels))[:n_channels],
                          (self.contrast + [list(DEFAULT_CONTRAST)] * n_channels)[:n_channels])

    def delete_image(self, name: str) -> None:
        """Remove an image with its labels, scribbles and their history."""
        self._require(name).unlink()
        self._path("labels", name, ".tif").unlink(missing_ok=True)
        self._remove_annotations(name)
        self._normalized.pop(name, None)

    def _remove_annotations(self, name: str) -> None:
        self._path("scribbles", name, ".npz").unlink(missing_ok=True)
        self._path("suggestions", name, ".json").unlink(missing_ok=True)
        self.history(name).clear()

    def load_image(self, name: str) -> np.ndarray:
        """The raw image, (C, H, W) float32."""
        return io.read_image(self._require(name), n_channels=len(self.channels))

    def image_shape(self, name: str) -> tuple[int, int]:
        """(H, W) of an image, read from the file header only; InputError when the header is damaged."""
        path = self._require(name)
        with _decoding(path, "the image"), tifffile.TiffFile(path) as tif:
            shape = tif.series[0].shape
            if len(shape) < 2:
                raise InputError(f"the image has shape {tuple(shape)}, not (channels, height, width)", path)
        return int(shape[-2]), int(shape[-1])

    def normalized(self, name: str) -> np.ndarray:
        """The image normalised per channel (io.normalize_percentile), (C, H, W) float32; cached by file time."""
        mtime = self._require(name).stat().st_mtime_ns
        cached = self._normalized.get(name)
        if cached is None or cached[0] != mtime:
            cached = (mtime, io.normalize_percentile(self.load_image(name)))
            self._normalized[name] = cached
        self._normalized.move_to_end(name)
        while len(self._normalized) > NORMALIZED_CACHE_SIZE:
            self._normalized.popitem(last=False)
        return cached[1]

    # --- labels -----------------------------------------------------------------------------

    def add_labels(self, image: str, filename: str, data: bytes) -> None:
        """Attach an uploaded instance-label file to ``image``; InputError naming ``filename`` when its
        shape differs from the image's or it cannot be read."""
        shape = self.image_shape(image)
        with _uploaded(filename, data) as path:
            try:
                labels = io.read_labels(path, shape=shape)
            except InputError as error:
                raise InputError(error.problem, filename) from error
        self._store_labels(image, labels, filename)

    def _store_labels(self, image: str, labels: np.ndarray, source: str) -> None:
        shape = self.image_shape(image)
        if labels.shape != shape:
            raise InputError(f"labels have shape {labels.shape}, the image is {shape}", source)
        save_label_tiff(self._path("labels", image, ".tif"), labels)

    def has_labels(self, name: str) -> bool:
        """Whether the image has instance labels (without reading them)."""
        self._require(name)
        return self._path("labels", name, ".tif").exists()

    def load_labels(self, name: str) -> np.ndarray | None:
        """(H, W) int32 instance labels, or None when the image has none."""
        return io.read_labels(self._path("labels", name, ".tif")) if self.has_labels(name) else None

    # --- importing folders -----------------------------------------------------------------------

    def import_folder(self, path: str | Path) -> tuple[list[str], list[InputError]]:
        """Import a TissueNet ``.npz``, a Cellpose folder, a folder of images with their labels or one image file
        (what each holds: :func:`impartial.io.import_samples`).

        Same rules as uploads: good files go in, each bad one gives an InputError. Returns (names, errors).
        """
        return self.add_samples(io.import_samples(path))

    def add_samples(self, samples: Iterable[tuple[str, Path | np.ndarray, Path | np.ndarray | None]]
                    ) -> tuple[list[str], list[InputError]]:
        """Store (source name, image, labels) samples, where image (C, H, W) and labels (H, W) are arrays or files
        to read; labels may be None. Returns (image names, errors), as :meth:`import_folder`."""
        names, errors = [], []
        for source, image, labels in samples:
            try:
                if isinstance(image, Path):
                    image = self._read_upload(image, source)
                name = self._store_image(Path(safe_name(source)).stem, image, source)
            except InputError as error:
                errors.append(error)
                continue
            names.append(name)
            try:
                if isinstance(labels, Path):
                    labels = io.read_labels(labels, shape=self.image_shape(name))
                if labels is not None:
                    self._store_labels(name, labels, source)
            except InputError as error:
                errors.append(error)
        return names, errors

    # --- scribbles ------------------------------------------------------------------------------

    def save_scribbles(self, name: str, scribbles_hws: np.ndarray, val_mask: np.ndarray | None = None,
                       user: str | None = None) -> None:
        """Replace an image's scribbles (H, W, S) 0/1, atomically.

        ``val_mask`` (H, W) bool fixes the validation box; None = chosen at training. With a ``user`` the
        replacement is one edit of the image's history, which that user can undo (Clear, automatic strokes);
        without one the history is forgotten (its edits no longer describe the file).
        """
        height, width = self.image_shape(name)
        expected = (height, width, self.n_scribble_channels)
        if scribbles_hws.shape != expected:
            raise InputError(f"scribbles have shape {scribbles_hws.shape}, expected {expected}", name)
        if val_mask is not None and val_mask.shape != (height, width):
            raise InputError(f"validation mask has shape {val_mask.shape}, expected {(height, width)}", name)
        replacement = (np.asarray(scribbles_hws) > 0).astype(np.uint8)
        with self._scribble_lock(name):
            if user is None:
                self.history(name).clear()
            else:
                change = strokes.replacement_change(self.load_scribbles(name), replacement)
                self.history(name).record(change, user, secrets.token_hex(8))
            self._write_scribbles(name, replacement, val_mask)

    def _write_scribbles(self, name: str, scribbles_hws: np.ndarray, val_mask: np.ndarray | None) -> None:
        arrays = {"scribble": scribbles_hws}
        if val_mask is not None:
            arrays["val_mask"] = np.asarray(val_mask, dtype=bool)
        storage.write_npz(self._path("scribbles", name, ".npz"), **arrays)

    def _scribble_lock(self, name: str) -> filelock.FileLock:
        """Held while an image's scribbles are read, changed and written: concurrent edits queue, none is lost."""
        self._require(name)
        (self.dir / "scribbles").mkdir(exist_ok=True)
        return filelock.FileLock(self.dir / "scribbles" / f".{name}.lock")

    def history(self, name: str) -> strokes.History:
        """The image's edit history (see :mod:`impartial.strokes`)."""
        return strokes.History(self.dir / "history" / name)

    def draw_stroke(self, name: str, stroke: strokes.Stroke, user: str, op: str) -> bool:
        """Paint one stroke into the image's scribbles as they are now on disk (merging with everyone's edits).

        ``op`` identifies the request: one that arrives again is ignored. Returns whether anything changed.
        """
        def paint(scribbles: np.ndarray, history: strokes.History) -> bool:
            change = strokes.stroke_change(scribbles, stroke, self.tasks)
            history.record(change, user, op)
            strokes.apply_change(scribbles, change)
            return not change.empty

        return self._edit_scribbles(name, op, paint)

    def undo_stroke(self, name: str, user: str, op: str) -> bool:
        """Undo the user's newest edit of the image, leaving later edits by others in place; False when none."""
        return self._edit_scribbles(name, op, lambda scribbles, history: history.undo(scribbles, user, op))

    def redo_stroke(self, name: str, user: str, op: str) -> bool:
        """Redo the user's most recently undone edit of the image; False when none."""
        return self._edit_scribbles(name, op, lambda scribbles, history: history.redo(scribbles, user, op))

    def _edit_scribbles(self, name: str, op: str,
                        edit: Callable[[np.ndarray, strokes.History], bool]) -> bool:
        with self._scribble_lock(name):
            history = self.history(name)
            if history.seen(op):
                return False
            stored = self._load_scribble_file(name)
            scribbles = self.load_scribbles(name).copy()
            changed = edit(scribbles, history)
            if changed:
                self._write_scribbles(name, scribbles, stored.get("val_mask"))
            return changed

    def suggestion_states(self, name: str) -> dict[str, str]:
        """Suggested regions of an image the user marked: :attr:`impartial.suggest.Suggestion.key` -> "done" or
        "skipped"; empty when none (or the record is unreadable: suggestions are only advice)."""
        self._require(name)
        try:
            states = json.loads(self._path("suggestions", name, ".json").read_text())
        except (OSError, ValueError):
            return {}
        return {str(key): str(value) for key, value in states.items()} if isinstance(states, dict) else {}

    def mark_suggestion(self, name: str, key: str, state: str) -> None:
        """Mark a suggested region of an image "done" or "skipped": it is not suggested again."""
        if state not in ("done", "skipped"):
            raise InputError(f"a suggestion is marked done or skipped, not {state!r}", name)
        with self._scribble_lock(name):
            storage.write_json(self._path("suggestions", name, ".json"), {**self.suggestion_states(name), key: state})

    def annotation_minutes(self) -> float:
        """Time spent scribbling this project's images so far (see :meth:`strokes.History.annotation_seconds`);
        images with a damaged history count nothing."""
        seconds = 0.0
        for name in self.images():
            with contextlib.suppress(InputError):
                seconds += self.history(name).annotation_seconds()
        return seconds / 60.0

    def scribbles_stamp(self, name: str) -> tuple[int, int, int]:
        """(modification time ns, size, inode) of the image's scribble file, zeros without one: changes with every
        edit (each write is a new file, see :mod:`impartial.storage`)."""
        path = self._path("scribbles", name, ".npz")
        with contextlib.suppress(FileNotFoundError):
            stat = path.stat()
            return stat.st_mtime_ns, stat.st_size, stat.st_ino
        return 0, 0, 0

    def image_stamp(self, name: str) -> int:
        """Modification time (ns) of the image's file: changes when the image is replaced."""
        return self._path("images", name, ".tif").stat().st_mtime_ns

    def annotation_stamp(self, name: str) -> tuple[int | None, int | None]:
        """Modification times (ns) of the image's labels and scribbles (None where there are none)."""
        return _modified(self._path("labels", name, ".tif")), _modified(self._path("scribbles", name, ".npz"))

    def _load_scribble_file(self, name: str) -> dict[str, np.ndarray]:
        """The arrays of the image's scribble file, decoded once per version of the file in this process (the
        canvas reads it after every stroke). Each call returns its own copies."""
        self._require(name)
        path = self._path("scribbles", name, ".npz")
        key = (str(path), *self.scribbles_stamp(name))
        with _scribble_files_lock:
            cached = _scribble_files.get(key)
        if cached is None:
            if not path.exists():
                return {}
            if not zipfile.is_zipfile(path):
                raise InputError("the scribbles are not an npz archive (damaged or replaced)", path)
            with _decoding(path, "the scribbles"), np.load(path, allow_pickle=False) as archive:
                cached = {key: archive[key] for key in archive.files}
            with _scribble_files_lock:
                _scribble_files[key] = cached
                while len(_scribble_files) > SCRIBBLE_CACHE_SIZE:
                    _scribble_files.popitem(last=False)
        return {array_name: array.copy() for array_name, array in cached.items()}

    def load_scribbles(self, name: str) -> np.ndarray:
        """(H, W, S) uint8 scribbles; zeros when the image has none yet. InputError naming the scribble file
        when it cannot be read or does not fit the image and the project's classes."""
        stored = self._load_scribble_file(name).get("scribble")
        expected = (*self.image_shape(name), self.n_scribble_channels)
        if stored is None:
            return np.zeros(expected, dtype=np.uint8)
        if stored.shape != expected:
            raise InputError(f"the scribbles have shape {stored.shape}, expected {expected}",
                             self._path("scribbles", name, ".npz"))
        return stored

    def load_val_mask(self, name: str) -> np.ndarray | None:
        """The stored validation box (H, W) bool, or None when it is chosen at training time."""
        return self._load_scribble_file(name).get("val_mask")

    def scribbled_images(self) -> list[str]:
        """Images with at least one scribbled pixel, leaving out damaged ones (see :meth:`damaged_files`)."""
        damaged = self.damaged_files()
        return [name for name in _stems(self.dir / "scribbles", ".npz")
                if name in self.images() and name not in damaged and self.load_scribbles(name).any()]

    # --- damaged files ----------------------------------------------------------------------------

    def damaged_files(self) -> dict[str, InputError]:
        """Images whose image, labels, scribble or history file cannot be used: image name -> the problem
        (an InputError naming the file, the first damaged one of that image).

        Image and label TIFFs are checked from their headers (a truncated file is found by where its pixel
        data should end); scribbles and the history index are decoded. Each result is kept per file modification time
        and size, so calling this on every page costs one ``stat`` per file after the first time.
        """
        damaged = {}
        for name in self.images():
            problem = self._file_problem(name)
            if problem is not None:
                damaged[name] = problem
        return damaged

    def _file_problem(self, name: str) -> InputError | None:
        """The first damaged file of one image, or None."""
        image_path = self._path("images", name, ".tif")
        checks = ((image_path, lambda: self._check_image(name)),
                  (self._path("labels", name, ".tif"), lambda: self._check_labels(name)),
                  (self._path("scribbles", name, ".npz"), lambda: self.load_scribbles(name)),
                  (self.history(name).folder / strokes.INDEX_FILE, lambda: self.history(name).check()))
        # the other files' checks depend on the image's shape and the project's classes: both are in the key
        context = (_stat_key(image_path), tuple(self.channels), self.n_scribble_channels)
        for path, check in checks:
            key = _stat_key(path)
            if key is None:
                continue
            key = (*key, context)
            if key not in _file_checks:
                if len(_file_checks) >= FILE_CHECK_CACHE_SIZE:
                    _file_checks.clear()
                try:
                    check()
                    _file_checks[key] = None
                except InputError as error:
                    _file_checks[key] = error
            if _file_checks[key] is not None:
                return _file_checks[key]
        return None

    def _check_image(self, name: str) -> None:
        path = self._require(name)
        shape = _tiff_extent(path, "the image")
        channels = shape[0] if len(shape) == 3 else 1
        if len(shape) not in (2, 3) or channels != len(self.channels):
            raise InputError(f"the image has shape {shape}, expected {len(self.channels)} channel(s) of height x "
                             "width", path)

    def _check_labels(self, name: str) -> None:
        path = self._path("labels", name, ".tif")
        shape = _tiff_extent(path, "the labels")
        if shape != self.image_shape(name):
            raise InputError(f"the labels have shape {shape}, the image is {self.image_shape(name)}", path)

    def remove_damaged(self, name: str) -> None:
        """Remove what makes ``name`` damaged: the whole image (with its labels, scribbles and history) when the
        image file itself is unreadable, else only the damaged labels, scribbles or history (a scribble file
        takes its history along, which would no longer match)."""
        problem = self.damaged_files().get(name)
        if problem is None:
            return
        damaged = Path(problem.path) if problem.path else None
        if damaged is None or damaged == self._path("images", name, ".tif"):
            self.delete_image(name)
        elif damaged == self._path("scribbles", name, ".npz"):
            self._remove_annotations(name)
        elif damaged.parent == self.history(name).folder:
            self.history(name).clear()
        else:
            damaged.unlink(missing_ok=True)

    def auto_scribble(self, name: str, fraction: float = 0.2, seed: int = 0, user: str | None = None) -> None:
        """Scribble ``fraction`` of the cells automatically from the image's whole-cell labels (replacing the
        image's scribbles; with a ``user``, one edit that user can undo).

        Only classes named ``cell`` can be derived from whole-cell labels; other tasks raise InputError.
        """
        labels = self.load_labels(name)
        if labels is None:
            raise InputError("automatic scribbles need labels for this image", name)
        others = [cls for task in self.tasks for cls in task.classes if cls != "cell"]
        if others:
            raise InputError(f"automatic scribbles come from whole-cell labels; classes {others} need their own "
                             "labels", name)
        truth = [[labels] for _ in self.tasks]
        scribbles_hws, val_mask = scribbles.auto_scribbles(truth, fraction, seed=seed)
        self.save_scribbles(name, scribbles_hws, val_mask=val_mask, user=user)

    # --- training and runs --------------------------------------------------------------------

    def training_set(self, config: RunConfig) -> list[TrainingImage]:
        """Every scribbled image, normalised, with its validation box (stored, else chosen by
        scribbles.validation_box) and labels. Damaged images are left out (logged; see :meth:`damaged_files`).
        InputError when nothing usable is scribbled."""
        for problem in self.damaged_files().values():
            log.warning("left out of training: %s", problem)
        names = self.scribbled_images()
        if not names:
            raise InputError(f"no scribbles in project {self.name}: draw some on the Scribble page first")
        dataset = []
        for name in names:
            scribbles_hws = self.load_scribbles(name)
            val_mask = self.load_val_mask(name)
            if val_mask is None:
                val_mask = scribbles.validation_box(scribbles_hws, config.train.val_fraction)
            item = TrainingImage(name=name, image=self.normalized(name), scribbles=scribbles_hws,
                                 val_mask=val_mask, labels=self.load_labels(name))
            dataset.append(item.check(config.n_channels, config.n_scribble_channels))
        return dataset

    def new_run_dir(self, label: str | None = None) -> Path:
        """Create ``runs/<YYYYmmdd-HHMMSS>-<random>[-label]``: names sort by start time."""
        suffix = f"-{safe_name(label)}" if label else ""
        while True:
            run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}{suffix}"
            folder = self.dir / "runs" / run_id
            folder.parent.mkdir(parents=True, exist_ok=True)
            try:
                folder.mkdir()
                return folder
            except FileExistsError:
                continue  # the same second and the same random part: draw again

    def runs(self) -> list[RunInfo]:
        """The project's runs, newest first."""
        root = self.dir / "runs"
        if not root.is_dir():
            return []
        folders = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), reverse=True)
        return [RunInfo(id=folder.name, dir=folder, status=read_status(folder)) for folder in folders]

    def run_dir(self, run_id: str) -> Path:
        """The folder of an existing run; InputError when there is none."""
        folder = self.dir / "runs" / run_id
        if safe_name(run_id) != run_id or not folder.is_dir():
            raise InputError(f"no run '{run_id}' in project {self.name}")
        return folder

    def prediction_dir(self, run_id: str) -> Path:
        """``predictions/<run_id>/`` (created), where a run's exported segmentations go."""
        if safe_name(run_id) != run_id:
            raise InputError("not a run id", run_id)
        folder = self.dir / "predictions" / run_id
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def slides_dir(self, run_id: str) -> Path:
        """``predictions/<run_id>/slides/`` (not created), where whole-slide batches of a run leave their outputs:
        apart from the per-image exports, whose names a slide's may match."""
        return self.prediction_dir(run_id) / "slides"


# --- uploads -------------------------------------------------------------------------------------

@contextlib.contextmanager
def _uploaded(filename: str, data: bytes) -> Iterator[Path]:
    """``data`` in a temporary file with the upload's suffix (readers choose the format by suffix)."""
    with tempfile.TemporaryDirectory(prefix="impartial-upload-") as folder:
        path = Path(folder) / f"upload{Path(safe_name(filename)).suffix.lower()}"
        path.write_bytes(data)
        yield path
