"""Whole slides and cohorts: chunked prediction on a Dask cluster, OME-Zarr out, per-cell CSV and QuPath GeoJSON.

A slide (OME-TIFF level 0, plain TIFF or OME-Zarr / NGFF) is read chunk by chunk through zarr and never held
whole. Every chunk of ``chunk`` x ``chunk`` pixels (its *core*) goes through three tasks:

1. ``predict``: the core plus ``margin`` (more than a cell is wide) plus ``halo`` (the network's receptive
   field) is read, normalised with the slide's percentiles (estimated once from a sample of chunks) and
   predicted; the core's probability, variance and entropy are written. The instance step runs on core +
   margin and keeps the cells whose first pixel (raster order) lies in the core, as
   :func:`impartial.instances.instances_from_probabilities` does for wide images: each cell is taken whole
   from the one chunk that owns it. These *pieces* go to the slide's work folder.
2. ``labels``: once every chunk's cell count is known (global ids: chunk by chunk in raster order), a chunk's
   labels are painted from its own pieces and its eight neighbours', in raster order of the chunks (a later
   chunk's cell wins a contested pixel, as in the windowed instance step).
3. ``cells``: the cells a chunk owns are measured (:func:`impartial.export.cell_table`) and outlined
   (:func:`impartial.export.cell_features`) on the final labels of core + margin, which hold them whole.

A last task per slide joins the per-chunk tables and features into ``NAME_cells.csv`` and ``NAME.geojson``.
Every task writes whole zarr chunks only (no two tasks touch one), and leaves a record in the work folder
last: a re-run skips what a finished task wrote (resume after a lost worker or a stopped job).

Output ``OUT/NAME.ome.zarr`` (NGFF 0.4): one multiscale float16 image, axes (c, y, x), whose channels are each
class's probability, each class's variance, then the entropy; ``labels/cells`` (and ``labels/nuclei`` for runs
with a nucleus class) as multiscale NGFF label images with each cell's class; the run, the percentiles and the
chunking under the ``impartial`` attribute.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import json
import math
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .config import NUCLEUS_CLASSES, InstanceConfig
from .errors import InputError
from .export import cell_features, cell_table
from .storage import atomic_path, write_json, write_npz, write_text

DEFAULT_CHUNK = 1024
DEFAULT_MARGIN = 128  # as impartial.instances.WINDOW_MARGIN: more than a cell's diameter
PERCENTILES = (1.0, 99.8)  # as impartial.io.normalize_percentile
SAMPLE_CHUNKS = 16  # chunks read to estimate a slide's percentiles
SAMPLE_VALUES = 2 ** 24  # values (all channels together: 64 MiB) at most in that sample (every k-th pixel beyond)
MAX_LEVELS = 5  # pyramid levels written, 2x downsampling each
MIN_LEVEL_CHUNK = 32  # a level's chunks are at least this wide
MAX_LABEL_PROPERTIES = 100_000  # cells listed with their class in the label metadata (the CSV has all)
ZARR_SUFFIXES = (".zarr",)
TIFF_SUFFIXES = (".tif", ".tiff")
WORK_FOLDER = "work"
CSV_SUFFIX = "_cells.csv"  # NAME_cells.csv: see output_paths
ZARR_METADATA = (".zattrs", ".zgroup", "zarr.json")  # files that make a folder a zarr group (v2, v3)


# --- reading slides --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Slide:
    """A slide opened lazily: where it is, its axes and size. Pickles to workers; pixels are read by regions.

    Attributes:
        path: the file (TIFF) or folder (OME-Zarr).
        name: the output name (file name without .ome.tif / .tif / .ome.zarr / .zarr).
        kind: "tiff" or "zarr".
        array_path: the level-0 array inside an OME-Zarr ("" for TIFF).
        axes: upper-case axis letters of the stored array (e.g. "CYX", "TCZYX", "YX").
        shape: the stored array's shape.
        pixel_size_um: side of a pixel in µm when the metadata give it.
    """

    path: str
    name: str
    kind: str
    array_path: str
    axes: str
    shape: tuple[int, ...]
    pixel_size_um: float | None = None

    @property
    def channels(self) -> int:
        return self.shape[self.axes.index("C")] if "C" in self.axes else 1

    @property
    def height(self) -> int:
        return self.shape[self.axes.index("Y")]

    @property
    def width(self) -> int:
        return self.shape[self.axes.index("X")]

    def read(self, top: int, bottom: int, left: int, right: int) -> np.ndarray:
        """Pixels of rows [top, bottom) and columns [left, right) as (C, h, w) float32 raw intensities."""
        index = tuple(slice(top, bottom) if axis == "Y" else slice(left, right) if axis == "X"
                      else slice(None) if axis == "C" else 0 for axis in self.axes)
        try:
            pixels = np.asarray(_open_array(self.path, self.kind, self.array_path)[index])
        except InputError:
            raise
        except Exception as error:
            raise InputError(f"cannot read pixels ({type(error).__name__}: {error})", self.path) from error
        kept = [axis for axis in self.axes if axis in "CYX"]
        if "C" not in kept:
            pixels, kept = pixels[np.newaxis], ["C", *kept]
        return np.transpose(pixels, [kept.index(axis) for axis in "CYX"]).astype(np.float32)


_ARRAYS: dict[tuple[str, str, str], Any] = {}
_ARRAYS_LOCK = threading.Lock()
OPEN_SLIDES = 8  # slides a process keeps open (a cohort's worker moves from slide to slide)


def _open_array(path: str, kind: str, array_path: str):
    """The zarr array of a slide, opened once per process (TIFF: tifffile's zarr store of level 0); the
    ``OPEN_SLIDES`` most recently opened stay open."""
    import zarr

    key = (path, kind, array_path)
    with _ARRAYS_LOCK:
        if key not in _ARRAYS:
            while len(_ARRAYS) >= OPEN_SLIDES:
                oldest = _ARRAYS.pop(next(iter(_ARRAYS)))
                close = getattr(oldest.store, "close", None)
                if close is not None:
                    close()
            if kind == "tiff":
                import tifffile

                _ARRAYS[key] = zarr.open_array(tifffile.imread(path, aszarr=True, level=0, series=0), mode="r")
            else:
                _ARRAYS[key] = zarr.open_array(str(Path(path) / array_path), mode="r")
        return _ARRAYS[key]


def slide_name(path: str | Path) -> str:
    """The output name of a slide: its file name without .ome.tif(f), .tif(f), .ome.zarr or .zarr."""
    name = Path(path).name
    for suffix in (".ome.tiff", ".ome.tif", ".ome.zarr", *TIFF_SUFFIXES, *ZARR_SUFFIXES):
        if name.lower().endswith(suffix):
            return name[:-len(suffix)]
    return Path(path).stem


def open_slide(path: str | Path, n_channels: int | None = None) -> Slide:
    """Open a slide without reading its pixels: OME-TIFF (level 0 of a pyramid), plain TIFF or OME-Zarr (NGFF).

    Raises:
        InputError naming the slide: missing, unreadable, not one of these formats, Z stacks or time series,
        or ``n_channels`` given and different.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("not found", path)
    is_zarr = path.is_dir() or path.suffix.lower() in ZARR_SUFFIXES
    if not is_zarr and path.suffix.lower() not in TIFF_SUFFIXES:
        raise InputError(f"unsupported slide type '{path.suffix}' (use an OME-TIFF, a TIFF or an OME-Zarr)", path)
    try:
        slide = _open_zarr_slide(path) if is_zarr else _open_tiff_slide(path)
        slide.read(0, 1, 0, 1)  # the first pixel: a damaged file fails here rather than on a worker
    except InputError:
        raise
    except Exception as error:
        raise InputError(f"cannot read the slide ({type(error).__name__}: {error})", path) from error
    extra = [axis for axis, size in zip(slide.axes, slide.shape, strict=True) if axis not in "CYX" and size > 1]
    if extra:
        raise InputError(f"has axes {slide.axes} with shape {slide.shape}; expected one 2-D plane per channel "
                         "(no Z stacks or time series)", path)
    if n_channels is not None and slide.channels != n_channels:
        raise InputError(f"has {slide.channels} channel(s), the run expects {n_channels}", path)
    return slide


def _open_tiff_slide(path: Path) -> Slide:
    import tifffile

    from .io import _tiff_layout

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        level = series.levels[0]
        axes, shape = level.axes.upper(), tuple(level.shape)
        pixel_size = _ome_tiff_pixel_size(tif.ome_metadata) if tif.is_ome else None
    channel, y_axis, x_axis = _tiff_layout(axes, shape, path)
    if len(axes) != len(shape) or "Y" not in axes or "X" not in axes:  # no usable axes metadata: from the shape
        letters = ["Q"] * len(shape)
        letters[y_axis], letters[x_axis] = "Y", "X"
        if channel is not None:
            letters[channel] = "C"
        axes = "".join(letters)
    elif channel is not None:
        axes = axes[:channel] + "C" + axes[channel + 1:]  # S (samples) or I / Q taken as channels
    return Slide(str(path), slide_name(path), "tiff", "", axes, shape, pixel_size)


def _ome_tiff_pixel_size(ome_xml: str | None) -> float | None:
    """PhysicalSizeX of the first image in µm (the OME default unit), when given."""
    import tifffile

    try:
        image = tifffile.xml2dict(ome_xml)["OME"]["Image"]
        pixels = (image[0] if isinstance(image, list) else image)["Pixels"]
        size, unit = float(pixels["PhysicalSizeX"]), pixels.get("PhysicalSizeXUnit", "µm")
    except (KeyError, TypeError, ValueError, IndexError):
        return None
    factors = {"µm": 1.0, "um": 1.0, "nm": 1e-3, "mm": 1e3}
    return size * factors[unit] if unit in factors and size > 0 else None


def _open_zarr_slide(path: Path) -> Slide:
    """An OME-Zarr image: its multiscales metadata (NGFF 0.4 or 0.5) read with ome-zarr's reader."""
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Multiscales, Reader

    location = parse_url(str(path))
    if location is None:
        raise InputError("not an OME-Zarr (no zarr group found)", path)
    node = next((node for node in Reader(location)() if node.load(Multiscales) is not None), None)
    if node is None:
        raise InputError("not an OME-Zarr image (no multiscales metadata)", path)
    multiscales = node.load(Multiscales)
    axes = "".join(axis["name"].upper() if isinstance(axis, dict) else str(axis).upper()
                   for axis in node.metadata["axes"])
    array_path = multiscales.datasets[0]
    shape = tuple(node.data[0].shape)
    pixel_size = None
    transforms = node.metadata.get("coordinateTransformations") or []
    if transforms and "X" in axes:
        scale = next((item["scale"] for item in transforms[0] if item.get("type") == "scale"), None)
        unit = next((axis.get("unit") for axis in node.metadata["axes"]
                     if isinstance(axis, dict) and axis["name"].lower() == "x"), None)
        if scale is not None and unit in ("micrometer", None):
            pixel_size = float(scale[axes.index("X")]) if unit == "micrometer" else None
    return Slide(str(path), slide_name(path), "zarr", array_path, axes, shape, pixel_size)


def find_slides(path: str | Path) -> list[Path]:
    """The slides ``path`` names: itself when it is a slide (a file, or an OME-Zarr folder), else the TIFFs and
    OME-Zarr folders directly inside it, sorted by name (hidden entries left out).

    Raises:
        InputError naming ``path``: missing, or a folder without slides.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("not found", path)
    if not path.is_dir() or _is_zarr_folder(path):
        return [path]
    found = sorted(entry for entry in path.iterdir() if not entry.name.startswith(".")
                   and (entry.suffix.lower() in ZARR_SUFFIXES
                        or (entry.is_file() and entry.suffix.lower() in TIFF_SUFFIXES)))
    if not found:
        raise InputError("holds no slides (OME-TIFF, TIFF or OME-Zarr)", path)
    return found


def _is_zarr_folder(path: Path) -> bool:
    """A folder named *.zarr, or one holding zarr metadata (an OME-Zarr named otherwise)."""
    return path.suffix.lower() in ZARR_SUFFIXES or any((path / name).exists() for name in ZARR_METADATA)


def output_paths(out_dir: str | Path, name: str) -> dict[str, Path]:
    """Where the outputs of the slide ``name`` go in ``out_dir``: "zarr", "csv" and "geojson"."""
    out_dir = Path(out_dir)
    return {"zarr": out_dir / f"{name}.ome.zarr", "csv": out_dir / f"{name}{CSV_SUFFIX}",
            "geojson": out_dir / f"{name}.geojson"}


def finished_slides(out_dir: str | Path) -> list[str]:
    """Names of the slides in ``out_dir`` whose CSV and GeoJSON are written (the last task writes both), sorted."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    names = sorted(path.name[:-len(CSV_SUFFIX)] for path in out_dir.glob(f"*{CSV_SUFFIX}"))
    return [name for name in names if all(path.exists() for path in output_paths(out_dir, name).values())]


# --- chunks, percentiles, halo ---------------------------------------------------------------------------------

def chunk_grid(height: int, width: int, chunk: int) -> list[tuple[int, int]]:
    """(row, column) of every chunk, raster order."""
    return [(row, column) for row in range(-(-height // chunk)) for column in range(-(-width // chunk))]


def estimate_percentiles(slide: Slide, chunk: int = DEFAULT_CHUNK, low: float = PERCENTILES[0],
                         high: float = PERCENTILES[1], max_chunks: int = SAMPLE_CHUNKS,
                         max_values: int = SAMPLE_VALUES, seed: int = 0) -> dict[str, Any]:
    """Per-channel ``low`` / ``high`` percentiles of a slide from a sample of its chunks.

    Up to ``max_chunks`` chunks, drawn with ``seed``, and every k-th pixel of them along both axes when they
    hold more than ``max_values`` values (pixels times channels), so a slide of many channels needs no more
    memory. A slide of ``max_chunks`` chunks or fewer and no more pixels gives
    exactly :func:`impartial.io.normalize_percentile`'s values.

    Returns:
        {"low": [per channel], "high": [...], "percentiles": [low, high], "chunks": [[row, column], ...],
        "stride": k}
    """
    grid = chunk_grid(slide.height, slide.width, chunk)
    if len(grid) > max_chunks:
        picked = np.random.default_rng(seed).choice(len(grid), size=max_chunks, replace=False)
        grid = [grid[index] for index in sorted(picked)]
    pixels = sum(min(chunk, slide.height - row * chunk) * min(chunk, slide.width - column * chunk)
                 for row, column in grid)
    stride = max(1, math.ceil(math.sqrt(pixels * slide.channels / max_values)))
    samples = []
    for row, column in grid:
        block = slide.read(row * chunk, min((row + 1) * chunk, slide.height),
                           column * chunk, min((column + 1) * chunk, slide.width))
        samples.append(block[:, ::stride, ::stride].reshape(slide.channels, -1))
    values = np.concatenate(samples, axis=1)
    if not np.isfinite(values).all():
        raise InputError("has NaN or infinite pixels", slide.path)
    lows, highs = np.percentile(values, [low, high], axis=1)
    return {"low": lows.tolist(), "high": highs.tolist(), "percentiles": [low, high],
            "chunks": [list(item) for item in grid], "stride": stride}


def normalize_with(image: np.ndarray, lows: Sequence[float], highs: Sequence[float]) -> np.ndarray:
    """Scale (C, h, w) so each channel's ``lows`` / ``highs`` map to 0 / 1, as io.normalize_percentile does."""
    lows, highs = np.asarray(lows, np.float32), np.asarray(highs, np.float32)
    spans = highs - lows
    scale = np.divide(1.0, spans, out=np.zeros_like(spans), where=spans > 0)
    return ((image.astype(np.float32) - lows[:, None, None]) * scale[:, None, None]).astype(np.float32)


def receptive_halo(depth: int) -> int:
    """Pixels on each side the U-Net sees: two 3x3 convolutions per level and scale (6 * 2**depth - 4),
    rounded up to a multiple of 2**depth."""
    multiple = 2 ** depth
    return -(-(6 * multiple - 4) // multiple) * multiple


def pyramid_levels(height: int, width: int, chunk: int) -> int:
    """Levels written: halving while the chunk stays divisible and at least MIN_LEVEL_CHUNK wide, and the slide
    larger than a chunk of that level."""
    levels = 1
    while (levels < MAX_LEVELS and chunk % 2 ** levels == 0 and chunk // 2 ** levels >= MIN_LEVEL_CHUNK
           and max(height, width) // 2 ** levels >= MIN_LEVEL_CHUNK):
        levels += 1
    return levels


# --- the job of one slide ---------------------------------------------------------------------------------------

@dataclass
class SlideJob:
    """Everything a worker needs for the chunks of one slide (pickled into every task)."""

    slide: Slide
    run_dir: str
    out_dir: str
    chunk: int
    margin: int
    halo: int
    levels: int
    normalisation: dict[str, Any]
    mcdrop: int
    instances: dict[str, Any]
    channel_names: list[str]
    class_names: list[str]
    task_names: list[str]
    nuclei: bool
    seed: int = 0
    threads: int = 0

    @property
    def grid(self) -> list[tuple[int, int]]:
        """(row, column) of every chunk, raster order (computed, so a job pickles small whatever the slide)."""
        return chunk_grid(self.slide.height, self.slide.width, self.chunk)

    def index(self, row: int, column: int) -> int:
        """A chunk's place in :attr:`grid`."""
        return row * -(-self.slide.width // self.chunk) + column

    @property
    def zarr_path(self) -> Path:
        return output_paths(self.out_dir, self.slide.name)["zarr"]

    @property
    def work(self) -> Path:
        return Path(self.out_dir) / WORK_FOLDER / self.slide.name

    @property
    def csv_path(self) -> Path:
        return output_paths(self.out_dir, self.slide.name)["csv"]

    @property
    def geojson_path(self) -> Path:
        return output_paths(self.out_dir, self.slide.name)["geojson"]

    @property
    def channels_out(self) -> list[str]:
        """The output image's channel names: probabilities, variances, entropy."""
        return ([f"{name} probability" for name in self.class_names]
                + [f"{name} variance" for name in self.class_names] + ["entropy"])

    def core(self, row: int, column: int) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) of a chunk's core."""
        top, left = row * self.chunk, column * self.chunk
        return top, min(top + self.chunk, self.slide.height), left, min(left + self.chunk, self.slide.width)

    def around(self, row: int, column: int, extra: int) -> tuple[int, int, int, int]:
        """The core grown by ``extra`` pixels on each side, clipped to the slide."""
        top, bottom, left, right = self.core(row, column)
        return (max(top - extra, 0), min(bottom + extra, self.slide.height),
                max(left - extra, 0), min(right + extra, self.slide.width))

    def neighbours(self, row: int, column: int) -> list[tuple[int, int]]:
        """The chunk and its (up to) eight neighbours, raster order."""
        rows, columns = -(-self.slide.height // self.chunk), -(-self.slide.width // self.chunk)
        return [(r, c) for r in range(row - 1, row + 2) for c in range(column - 1, column + 2)
                if 0 <= r < rows and 0 <= c < columns]

    def settings(self) -> dict[str, Any]:
        """What the outputs depend on: a re-run with other settings must not mix with the written chunks."""
        return {"run": str(Path(self.run_dir).resolve()), "slide": str(Path(self.slide.path).resolve()),
                "shape": list(self.slide.shape), "chunk": self.chunk, "margin": self.margin, "halo": self.halo,
                "levels": self.levels, "normalisation": self.normalisation, "mcdrop": self.mcdrop,
                "instances": self.instances, "seed": self.seed}


def make_job(slide: Slide, run, out_dir: str | Path, chunk: int = DEFAULT_CHUNK, margin: int = DEFAULT_MARGIN,
             mcdrop: int | None = None, seed: int = 0, threads: int = 0,
             instance_config: InstanceConfig | None = None) -> SlideJob:
    """The job for one slide and a loaded :class:`impartial.runs.Run`; estimates the slide's percentiles.

    ``margin`` (context for the instance step, more than a cell's diameter) must not exceed ``chunk``, and
    ``chunk`` must be a multiple of the network's size multiple.
    """
    config = run.config
    run.require_checkpoints()
    if chunk < 2 ** config.model.depth or chunk % 2 ** config.model.depth:
        raise InputError(f"the chunk side must be a multiple of {2 ** config.model.depth}, got {chunk}")
    if not 0 <= margin <= chunk:
        raise InputError(f"the margin ({margin} px) must lie between 0 and the chunk side ({chunk} px)")
    instances = dataclasses.asdict(instance_config or run.instance_config())
    class_names = config.class_names
    job = SlideJob(slide=slide, run_dir=str(run.dir), out_dir=str(out_dir), chunk=chunk, margin=margin,
                   halo=receptive_halo(config.model.depth), levels=pyramid_levels(slide.height, slide.width, chunk),
                   normalisation={}, mcdrop=config.predict.mcdrop if mcdrop is None else mcdrop,
                   instances=instances, channel_names=list(config.channels), class_names=class_names,
                   task_names=[task.name for task in config.tasks],
                   nuclei=any(name in NUCLEUS_CLASSES for name in class_names), seed=seed, threads=threads)
    job.normalisation = estimate_percentiles(slide, chunk)
    return job


def prepare_outputs(job: SlideJob) -> bool:
    """Create the OME-Zarr arrays and metadata, or check that an earlier run of the same settings wrote them.

    Returns True when resuming. Raises InputError when the output holds a prediction made with other settings.
    """
    import zarr

    settings_path = job.work / "settings.json"
    if settings_path.exists() and not job.zarr_path.exists():  # the output was deleted: its records go too
        for record in job.work.glob("*_*_*.*"):
            record.unlink()
        settings_path.unlink()
    if settings_path.exists():
        if json.loads(settings_path.read_text()) != json.loads(json.dumps(job.settings())):
            raise InputError("holds the output of another run or other settings; delete it or choose another "
                             "--out", job.zarr_path)
        return True
    if job.zarr_path.exists():
        raise InputError("exists but was not written by this command; delete it or choose another --out",
                         job.zarr_path)
    root = zarr.open_group(str(job.zarr_path), mode="w", zarr_format=2)
    height, width = job.slide.height, job.slide.width
    shapes = [(-(-height // 2 ** level), -(-width // 2 ** level)) for level in range(job.levels)]
    sides = [job.chunk // 2 ** level for level in range(job.levels)]
    for level, (shape, side) in enumerate(zip(shapes, sides, strict=True)):
        root.create_array(str(level), shape=(len(job.channels_out), *shape), chunks=(1, side, side),
                          dtype="float16", fill_value=0, chunk_key_encoding={"name": "v2", "separator": "/"})
    _write_multiscales(root, job, ["c", "y", "x"], "prediction")
    root.attrs["omero"] = {"name": job.slide.name, "version": "0.4",
                           "channels": [{"label": name, "active": index < len(job.class_names),
                                         "window": {"start": 0.0, "end": 1.0, "min": 0.0, "max": 1.0}}
                                        for index, name in enumerate(job.channels_out)]}
    root.attrs["impartial"] = {"source": job.slide.path, "channels": job.channel_names, **job.settings(),
                               "outputs": job.channels_out}
    labels = root.create_group("labels")
    names = ["cells", "nuclei"] if job.nuclei else ["cells"]
    labels.attrs["labels"] = names
    for name in names:
        group = labels.create_group(name)
        for level, (shape, side) in enumerate(zip(shapes, sides, strict=True)):
            group.create_array(str(level), shape=shape, chunks=(side, side), dtype="int32", fill_value=0,
                               chunk_key_encoding={"name": "v2", "separator": "/"})
        _write_multiscales(group, job, ["y", "x"], name)
        group.attrs["image-label"] = {"version": "0.4", "source": {"image": "../../"}}
    write_json(settings_path, job.settings())
    return False


def _write_multiscales(group, job: SlideJob, axes: list[str], name: str) -> None:
    from ome_zarr.format import FormatV04
    from ome_zarr.writer import write_multiscales_metadata

    size = job.slide.pixel_size_um
    unit = {} if size is None else {"unit": "micrometer"}
    axis_list = [{"name": "c", "type": "channel"} if axis == "c" else {"name": axis, "type": "space", **unit}
                 for axis in axes]
    datasets = [{"path": str(level), "coordinateTransformations": [{"type": "scale", "scale": [
        *([1.0] if "c" in axes else []), *[(size or 1.0) * 2 ** level] * 2]}]} for level in range(job.levels)]
    write_multiscales_metadata(group, datasets, fmt=FormatV04(), axes=axis_list, name=name)


# --- the tasks --------------------------------------------------------------------------------------------------

_MODELS: dict[tuple, list] = {}
_MODELS_LOCK = threading.Lock()


def worker_models(run_dir: str):
    """The run and its checkpoint ensemble, loaded once per process (a Dask worker keeps them between tasks) on
    the run's device: CUDA when the worker has a GPU, else the CPU."""
    from .device import pick_device
    from .predict import load_models
    from .runs import Run

    run = Run.load(run_dir)
    key = (str(Path(run_dir).resolve()), tuple((str(path), path.stat().st_mtime_ns) for path in run.checkpoints))
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS.clear()
            _MODELS[key] = [run, load_models(run, pick_device(run.config.train.device))]
        return _MODELS[key]


def predict_chunk(job: SlideJob, row: int, column: int) -> int:
    """Task 1: predict a chunk, write its core's maps and keep its cells as pieces; returns its cell count."""
    record = job.work / f"pieces_{row}_{column}.npz"
    if record.exists():
        with np.load(record, allow_pickle=False) as pieces:
            return int(pieces["count"])
    import torch

    from .instances import _owned_ids, combine_class_probabilities, instances_from_probabilities
    from .predict import predict_with_models

    run, models = worker_models(job.run_dir)
    if job.threads:
        torch.set_num_threads(job.threads)
    torch.manual_seed(job.seed * 1_000_003 + row * 65_537 + column)  # MC dropout repeats on a re-run
    top, bottom, left, right = job.core(row, column)
    outer = job.around(row, column, job.margin)
    read = job.around(row, column, job.margin + job.halo)
    raw = job.slide.read(*read)
    image = normalize_with(raw, job.normalisation["low"], job.normalisation["high"])
    prediction = predict_with_models(models, run.config, image, job.mcdrop, mc_dropout=True)
    arrays = prediction.arrays()
    maps = np.concatenate([arrays["class_segmentation"], arrays["class_segmentation_variance"],
                           prediction.entropy()[None]])
    core = (slice(None), slice(top - read[0], bottom - read[0]), slice(left - read[2], right - read[2]))
    _write_levels(job.zarr_path, "", maps[core], top, left, job.levels, average=True)

    window = (slice(outer[0] - read[0], outer[1] - read[0]), slice(outer[2] - read[2], outer[3] - read[2]))
    cell_prob, nucleus_prob = combine_class_probabilities(prediction.class_probabilities())
    cells, nuclei = instances_from_probabilities(
        cell_prob[window], None if nucleus_prob is None else nucleus_prob[window], image[(slice(None), *window)],
        InstanceConfig(**job.instances), core_prob=None if prediction.core is None else prediction.core[window])
    owned = _owned_ids(cells, top - outer[0], left - outer[2], job.chunk)
    new_ids = np.zeros(int(cells.max()) + 1, np.int32)
    new_ids[owned] = np.arange(1, len(owned) + 1, dtype=np.int32)
    pieces = {"cells": new_ids[cells], "origin": np.array(outer[::2]), "count": np.array(len(owned))}
    if job.nuclei and nuclei is not None:
        pieces["nuclei"] = np.where(nuclei > 0, pieces["cells"], 0).astype(np.int32)
    write_npz(record, **pieces)
    release_freed_memory()
    return len(owned)


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The process's C library when it is glibc (it has ``malloc_trim``), else None."""
    try:
        library = ctypes.CDLL(None)  # the symbols the process already has, the C library's among them
    except (OSError, TypeError):  # (Windows has no such handle)
        return None
    return library if hasattr(library, "malloc_trim") else None


def release_freed_memory() -> None:
    """Hand what a chunk's prediction freed back to the system (glibc's ``malloc_trim``); nothing where the C
    library has no such call (macOS, musl).

    A worker's heap otherwise keeps pieces of every chunk's tensors it ran, and its peak memory crept up with the
    number of chunks (1018 and 1129 MiB at 8192 and 16384 px a side). With a trim after each chunk the 8192 px
    slide peaked at 932 MiB, and ran no slower: a trim takes milliseconds, a chunk seconds.
    """
    library = _glibc()
    if library is not None:
        library.malloc_trim(0)


def cell_offsets(counts: Sequence[int]) -> list[int]:
    """Ids before each chunk (chunk k's cells are offsets[k] + 1 .. offsets[k + 1]); the last is the total."""
    return [0, *np.cumsum(counts).tolist()]


def label_chunk(job: SlideJob, row: int, column: int, offsets: Sequence[int]) -> None:
    """Task 2: paint a chunk's labels from its own and its neighbours' pieces (later chunks win), write them."""
    record = job.work / f"labels_{row}_{column}.json"
    if record.exists():
        return
    top, bottom, left, right = job.core(row, column)
    cells = np.zeros((bottom - top, right - left), np.int32)
    nuclei = np.zeros_like(cells) if job.nuclei else None
    for other in job.neighbours(row, column):
        with np.load(job.work / f"pieces_{other[0]}_{other[1]}.npz", allow_pickle=False) as archive:
            pieces = {key: archive[key] for key in archive.files}
        offset = offsets[job.index(*other)]
        origin_y, origin_x = (int(value) for value in pieces["origin"])
        piece = pieces["cells"]
        y0, y1 = max(top, origin_y), min(bottom, origin_y + piece.shape[0])
        x0, x1 = max(left, origin_x), min(right, origin_x + piece.shape[1])
        if y0 >= y1 or x0 >= x1:
            continue
        source = (slice(y0 - origin_y, y1 - origin_y), slice(x0 - origin_x, x1 - origin_x))
        target = (slice(y0 - top, y1 - top), slice(x0 - left, x1 - left))
        written = piece[source] > 0
        cells[target][written] = piece[source][written] + offset
        if nuclei is not None and "nuclei" in pieces:
            nucleus = pieces["nuclei"][source]
            nuclei[target][written] = np.where(nucleus > 0, nucleus + offset, 0)[written]
    _write_levels(job.zarr_path, "labels/cells", cells, top, left, job.levels, average=False)
    if nuclei is not None:
        _write_levels(job.zarr_path, "labels/nuclei", nuclei, top, left, job.levels, average=False)
    write_json(record, {"max_id": int(cells.max())})


def measure_chunk(job: SlideJob, row: int, column: int, offsets: Sequence[int]) -> None:
    """Task 3: table rows and GeoJSON features of the cells a chunk owns, from the final labels around it.

    They are written as the chunk's parts of the slide's two files (CSV with its header, GeoJSON features joined
    by commas), so the last task only joins text; the record keeps each cell's id and class for the labels'
    metadata.
    """
    record = _measured_record(job, row, column)
    if record.exists():
        return
    import zarr

    top, bottom, left, right = job.around(row, column, job.margin)
    first, last = offsets[job.index(row, column)], offsets[job.index(row, column) + 1]
    root = zarr.open_group(str(job.zarr_path), mode="r")
    cells = np.asarray(root["labels/cells/0"][top:bottom, left:right])
    cells = np.where((cells > first) & (cells <= last), cells, 0)
    nuclei = None
    if job.nuclei:
        nuclei = np.asarray(root["labels/nuclei/0"][top:bottom, left:right])
        nuclei = np.where(cells > 0, nuclei, 0)
    maps = np.asarray(root["0"][:, top:bottom, left:right]).astype(np.float32)
    n_classes = len(job.class_names)
    table = cell_table(cells, job.slide.read(top, bottom, left, right), job.channel_names, uncertainty=maps[-1],
                       class_map=np.argmax(maps[:n_classes], axis=0), class_names=job.class_names,
                       pixel_size_um=job.slide.pixel_size_um)
    table["centroid_y"] += top
    table["centroid_x"] += left
    if job.slide.pixel_size_um is not None:
        table["centroid_y_um"] = table["centroid_y"] * job.slide.pixel_size_um
        table["centroid_x_um"] = table["centroid_x"] * job.slide.pixel_size_um
    features = cell_features(cells, table, offset=(top, left), nuclei=nuclei)
    if len(table):  # an empty chunk's table has no dtypes to cast
        table = table.astype({"id": np.int64, "area": np.int64})
    write_text(_part(job, row, column, "csv"), table.to_csv(index=False))
    write_text(_part(job, row, column, "geojson"),
               ",".join(json.dumps(feature, separators=(",", ":")) for feature in features))
    classes = [[int(cell_id), str(name)] for cell_id, name in zip(table.get("id", []), table.get("class", []),
                                                                 strict=True)]
    # compact: a chunk holds thousands of cells, and the last task reads every chunk's record
    write_text(record, json.dumps({"cells": len(table), "classes": classes}, separators=(",", ":")))


def _part(job: SlideJob, row: int, column: int, kind: Literal["csv", "geojson"]) -> Path:
    """A chunk's part of the slide's CSV or GeoJSON (see :func:`measure_chunk`)."""
    return job.work / f"cells_{row}_{column}.{kind}"


def _measured_record(job: SlideJob, row: int, column: int) -> Path:
    """The record :func:`measure_chunk` writes last: the chunk's cell count and each cell's id and class."""
    return job.work / f"measured_{row}_{column}.json"


def finish_slide(job: SlideJob) -> dict[str, Any]:
    """Task 4: join the chunks' parts into NAME_cells.csv and NAME.geojson; the label metadata.

    The parts are copied as text, one at a time, so this takes seconds and a constant memory however many cells
    the slide has (re-reading and re-writing every cell's JSON took 145 s for the 788 622 cells of a 16384 x
    16384 slide).
    """
    import zarr

    rows, classes = 0, []
    with (atomic_path(job.geojson_path) as geojson_tmp, open(geojson_tmp, "w", encoding="utf-8") as geojson,
          atomic_path(job.csv_path) as csv_tmp, open(csv_tmp, "w", encoding="utf-8", newline="") as csv):
        geojson.write('{"type":"FeatureCollection","features":[')
        features_written = False
        for index, (row, column) in enumerate(job.grid):
            with open(_part(job, row, column, "csv"), encoding="utf-8", newline="") as part:
                header = part.readline()
                if index == 0:  # every part starts with the same header (an empty chunk's too)
                    csv.write(header)
                shutil.copyfileobj(part, csv)
            with open(_part(job, row, column, "geojson"), encoding="utf-8") as part:
                first = part.read(1)
                if first:
                    geojson.write(("," if features_written else "") + first)
                    shutil.copyfileobj(part, geojson)
                    features_written = True
            record = json.loads(_measured_record(job, row, column).read_text())
            rows += record["cells"]
            if rows <= MAX_LABEL_PROPERTIES:
                classes += record["classes"]
        geojson.write("]}")
    root = zarr.open_group(str(job.zarr_path), mode="r+")
    for name in ["cells", "nuclei"] if job.nuclei else ["cells"]:
        group = root[f"labels/{name}"]
        label = dict(group.attrs["image-label"])
        if rows <= MAX_LABEL_PROPERTIES:
            label["properties"] = [{"label-value": cell_id, "class": class_name} for cell_id, class_name in classes]
        group.attrs["image-label"] = label
    return {"slide": job.slide.name, "cells": rows, "zarr": str(job.zarr_path), "csv": str(job.csv_path),
            "geojson": str(job.geojson_path)}


def _write_levels(zarr_path: Path, group: str, values: np.ndarray, top: int, left: int, levels: int,
                  average: bool) -> None:
    """Write a chunk's core (C, h, w) or (h, w) at (top, left) into every pyramid level of ``group``.

    Level k holds 2**k x 2**k blocks: their mean (``average``, for probabilities) or their top-left pixel (labels).
    """
    import zarr

    root = zarr.open_group(str(zarr_path / group) if group else str(zarr_path), mode="r+")
    for level in range(levels):
        factor = 2 ** level
        if average and factor > 1:
            height, width = values.shape[-2:]
            padded = np.pad(values, [(0, 0)] * (values.ndim - 2)
                            + [(0, -height % factor), (0, -width % factor)], mode="edge")
            shrunk = padded.reshape(*values.shape[:-2], padded.shape[-2] // factor, factor,
                                    padded.shape[-1] // factor, factor).mean(axis=(-3, -1))
        else:
            shrunk = values[..., ::factor, ::factor]
        index = (slice(top // factor, top // factor + shrunk.shape[-2]),
                 slice(left // factor, left // factor + shrunk.shape[-1]))
        array = root[str(level)]
        array[(slice(None), *index) if values.ndim == 3 else index] = shrunk.astype(array.dtype)


# --- the cohort -------------------------------------------------------------------------------------------------

@dataclass
class SlideResult:
    """What happened to one slide: its summary when it finished, else the message saying why not."""

    path: str
    summary: dict[str, Any] | None = None
    error: str | None = None


@dataclass(frozen=True)
class SlideProgress:
    """How far one slide is: of its ``chunks`` chunks, how many have been predicted, labelled and measured (the
    three tasks of each chunk, in that order; see the module's docstring)."""

    path: str
    chunks: int
    predicted: int = 0
    labelled: int = 0
    measured: int = 0

    @property
    def fraction(self) -> float:
        """The share of the slide's chunk tasks done, in [0, 1]."""
        return (self.predicted + self.labelled + self.measured) / (3 * self.chunks)


SlideStage = Literal["predicted", "labelled", "measured"]
STOPPED_MESSAGE = "stopped before it finished; start it again to go on from the chunks already done"


CONNECT_TIMEOUT_S = 10  # how long to try reaching a scheduler before giving up with a message
# Dask starts its worker processes with MALLOC_TRIM_THRESHOLD_=65536 (to return memory to the system sooner).
# Setting it turns off glibc's adaptive mmap threshold, so every large tensor of a prediction is mapped and
# unmapped afresh: a 1024 px chunk took 19-21 s instead of 10-11 s (measured on this 2-core VM, 27 November).
# Unset (None) for the workers a local cluster starts; the image's dask.yaml does the same for `dask worker`.
# MALLOC_ARENA_MAX=2: glibc gives threads that allocate heaps of their own (a worker runs several threads), and
# each keeps freed chunk memory; two lowered a worker's peak on an 8192 x 8192 slide from 920-927 to 827-851 MiB,
# a chunk 11.1 s against 10.9 s.
WORKER_ENVIRONMENT = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
                      "distributed.nanny.pre-spawn-environ.MALLOC_ARENA_MAX": "2"}


@contextlib.contextmanager
def dask_client(scheduler: str | None, workers: int, threads: int = 0) -> Iterator[tuple[Any, int]]:
    """A ``distributed.Client`` of ``scheduler`` (``tcp://HOST:PORT``), or of a local cluster of ``workers``
    processes made for the work and closed after it; with the torch threads each task should use: ``threads`` when
    given, else a local cluster's share of this machine's CPUs, and 0 (torch's default) on a scheduler's workers.

    Raises InputError naming the scheduler when it cannot be reached within ``CONNECT_TIMEOUT_S``.
    """
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError, ValueError) as error:  # ValueError: not an address
            raise InputError(f"cannot reach the Dask scheduler ({error})", scheduler) from error
        with client:
            yield client, threads
        return
    import dask

    # Dask's nanny writes its settings into this process's environment before it spawns a worker, so a cluster
    # started earlier here (by other code) would pass the variable on to ours
    os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    with dask.config.set(WORKER_ENVIRONMENT), LocalCluster(n_workers=workers, threads_per_worker=1,
                                                           processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        yield client, threads or max(1, (os.cpu_count() or 1) // workers)


def predict_slides(client, run_dir: str | Path, slides: Iterable[str | Path], out_dir: str | Path,
                   chunk: int = DEFAULT_CHUNK, margin: int = DEFAULT_MARGIN, mcdrop: int | None = None,
                   threads: int = 0, progress: bool = True,
                   on_result: Callable[[SlideResult], None] | None = None,
                   on_progress: Callable[[SlideProgress], None] | None = None,
                   stop_event: threading.Event | None = None) -> list[SlideResult]:
    """Predict a cohort of slides on a ``dask.distributed`` client as one task graph.

    A slide that cannot be opened, has the wrong channel count or fails in a task gets a :class:`SlideResult`
    with its message; the others finish. A re-run with the same settings skips what was written.
    Once ``stop_event`` is set, the next task to end cancels the rest: tasks already running on workers still
    write their chunk (a re-run skips it), and every slide not finished gets :data:`STOPPED_MESSAGE`.

    Args:
        client: a ``distributed.Client`` (local cluster or an existing scheduler).
        run_dir: a trained run folder, readable by the workers under the same path.
        slides: slide paths (OME-TIFF, TIFF, OME-Zarr), readable by the workers under the same paths.
        out_dir: output folder, shared with the workers.
        chunk, margin: chunk side and instance context in pixels.
        mcdrop: MC-dropout passes per checkpoint (default: the run's).
        threads: torch threads per task (0: torch's default).
        progress: show a tqdm bar over the chunks' tasks.
        on_result: called with each slide's result as it finishes (or stops).
        on_progress: called with a slide's :class:`SlideProgress` once its tasks are submitted and after each
            of its chunk tasks that succeeds.
        stop_event: set it (from another thread) to stop.
    """
    from distributed import as_completed

    from .runs import Run

    run = Run.load(run_dir)
    results: dict[str, SlideResult] = {}
    finals, chunk_futures = {}, []
    slide_progress: dict[str, SlideProgress] = {}
    stage_of: dict[Any, tuple[str, SlideStage]] = {}  # chunk task -> (slide, the stage its end completes)
    call = uuid.uuid4().hex[:8]  # task keys of this call: a cluster may still hold an earlier call's results
    for path in slides:
        result = results.setdefault(str(path), SlideResult(str(path)))
        try:
            job = make_job(open_slide(path, run.config.n_channels), run, out_dir, chunk, margin, mcdrop,
                           threads=threads)
            if any(str(other.zarr_path) == str(job.zarr_path) for other in _jobs(finals)):
                raise InputError(f"another slide has the same name '{job.slide.name}'", path)
            prepare_outputs(job)
        except InputError as error:
            result.error = str(error)
            if on_result:
                on_result(result)
            continue
        key = f"{job.slide.name}-{call}"
        counts = [client.submit(predict_chunk, job, *where, key=f"predict-{key}-{where[0]}-{where[1]}")
                  for where in job.grid]
        offsets = client.submit(cell_offsets, counts, key=f"offsets-{key}")
        labelled = {where: client.submit(label_chunk, job, *where, offsets, key=f"labels-{key}-{where[0]}-{where[1]}")
                    for where in job.grid}
        measured = [client.submit(_after, measure_chunk, job, where, offsets,
                                  [labelled[other] for other in job.neighbours(*where)],
                                  key=f"cells-{key}-{where[0]}-{where[1]}") for where in job.grid]
        finals[client.submit(_after, finish_slide, job, None, None, measured, key=f"finish-{key}")] = (job, result)
        chunk_futures += [*counts, *labelled.values(), *measured]
        slide_progress[str(path)] = SlideProgress(str(path), len(job.grid))
        for stage, futures in (("predicted", counts), ("labelled", labelled.values()), ("measured", measured)):
            stage_of.update({future: (str(path), stage) for future in futures})
        if on_progress:
            on_progress(slide_progress[str(path)])

    bar = None
    if progress and chunk_futures:
        from tqdm import tqdm

        bar = tqdm(total=len(chunk_futures), unit="task", dynamic_ncols=True,
                   desc=f"{len(finals)} slide(s), 3 tasks per chunk")
    pending = set(finals)
    for future in as_completed([*chunk_futures, *finals]):
        if future in pending:
            job, result = finals[future]
            try:
                result.summary = future.result()
            except Exception as error:  # a task of this slide failed: report it, the others go on
                result.error = _task_message(error, job.slide.path)
            if on_result:
                on_result(result)
        else:
            if bar is not None:
                bar.update(1)
            if future.status == "finished":  # a failed task's slide gets its message from the slide's last task
                path, stage = stage_of[future]
                done = slide_progress[path]
                slide_progress[path] = dataclasses.replace(done, **{stage: getattr(done, stage) + 1})
                if on_progress:
                    on_progress(slide_progress[path])
        if stop_event is not None and stop_event.is_set():
            _stop(client, [*chunk_futures, *finals], [result for _, result in finals.values()], on_result)
            break
    if bar is not None:
        bar.close()
    return list(results.values())


def _stop(client, futures: list, results: list[SlideResult], on_result: Callable[[SlideResult], None] | None) -> None:
    """Cancel ``futures`` and give every slide of ``results`` not finished :data:`STOPPED_MESSAGE`."""
    client.cancel(futures)
    for result in results:
        if result.summary is None and result.error is None:
            result.error = f"{result.path}: {STOPPED_MESSAGE}"
            if on_result:
                on_result(result)


def _jobs(finals: dict) -> list[SlideJob]:
    return [job for job, _ in finals.values()]


def _after(task: Callable, job: SlideJob, where: tuple[int, int] | None, offsets, _dependencies) -> Any:
    """Run ``task`` once ``_dependencies`` (futures passed only to order the graph) are done."""
    return task(job) if where is None else task(job, *where, offsets)


def _task_message(error: Exception, path: str) -> str:
    """One line naming the slide (an InputError raised on a worker arrives with its message only)."""
    if isinstance(error, InputError):
        return str(error) if path in str(error) else f"{path}: {error}"
    return f"{path}: failed ({type(error).__name__}: {error})"
