"""Cached per-image computations: normalised images, composites, predictions, segmentations, heat maps, outlined
pictures, scores, diagnostics, exports.

Cache keys carry the project and run folders and file modification times (``stamp``), so a re-uploaded image, a
new checkpoint of a training run or edited labels / scribbles are never served stale, and one project's results
are never served for another (a session reaches a project only through the access checks of ``open_project``).
Every cache is bounded (``max_entries``, least recently used first out). Results are shared by all sessions and
must be treated as read-only.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import io
import logging
import tempfile
import threading
import zipfile
from collections.abc import Callable, Hashable
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from impartial.device import lower_thread_priority
from impartial.diagnostics import Finding, prediction_findings
from impartial.export import EXPORT_FORMATS, export_file_name
from impartial.metrics import evaluate
from impartial.pipeline import Segmentation, export_segmentation, segment_prediction
from impartial.predict import Prediction, predict_image
from impartial.project import Project
from impartial.results import kept_cells, kept_prediction
from impartial.runs import Run, checkpoint_stamp, result_files

from .display import ChannelDisplay
from .render import composite, heat_picture, heatmap, outline, picture_step, png_bytes

log = logging.getLogger(__name__)


@st.cache_data(max_entries=16, show_spinner=False)
def _normalized(project_dir: str, name: str, stamp: int) -> np.ndarray:
    return Project(project_dir).normalized(name)


def normalized(project: Project, name: str) -> np.ndarray:
    """(C, H, W) float32 normalised image."""
    return _normalized(str(project.dir), name, project.image_stamp(name))


@st.cache_data(max_entries=64, show_spinner=False)
def _composite(project_dir: str, name: str, stamp: int, display: ChannelDisplay) -> np.ndarray:
    return composite(_normalized(project_dir, name, stamp), list(display.colors),
                     [list(pair) for pair in display.contrast], list(display.gammas))


def project_composite(project: Project, name: str, display: ChannelDisplay | None = None) -> np.ndarray:
    """(H, W, 3) uint8 composite, in the project's channel colours and contrast unless ``display`` says otherwise."""
    return _composite(str(project.dir), name, project.image_stamp(name), display or ChannelDisplay.of_project(project))


@st.cache_resource(max_entries=16, show_spinner="Predicting with MC dropout ...")
def _prediction(run_dir: str, run_key: tuple[int, ...], project_dir: str, name: str, stamp: int) -> Prediction:
    run, project = Run.load(run_dir), Project(project_dir)
    return kept_prediction(run, project, name) or predict_image(run, _normalized(project_dir, name, stamp))


def _result_key(run: Run, project: Project, name: str) -> tuple[str, tuple[int, ...], str, str, int]:
    """The cache key of one run's results on one image: folders, checkpoint and image modification times."""
    return str(run.dir), checkpoint_stamp(run.dir), str(project.dir), name, project.image_stamp(name)


def prediction(run: Run, project: Project, name: str) -> Prediction:
    """The run's MC-dropout prediction of a project image (mean, variance, entropy per class): the one kept in
    the run folder when the run ended (results.prepare_results) when it is current, else predicted now."""
    return _prediction(*_result_key(run, project, name))


@st.cache_resource(max_entries=32, show_spinner="Finding cells ...")
def _segmentation(run_dir: str, run_key: tuple[int, ...], project_dir: str, name: str, stamp: int,
                  threshold: float, core_threshold: float, seeds: str) -> Segmentation:
    run = Run.load(run_dir)
    config = dataclasses.replace(run.instance_config(), threshold=threshold, core_threshold=core_threshold,
                                 seeds=seeds)
    found = _prediction(run_dir, run_key, project_dir, name, stamp)  # cached: only the instance step reruns
    kept = kept_cells(run, Project(project_dir), name, config)  # found when the run ended, at its own settings
    if kept is not None:
        return Segmentation(found, *kept)
    return segment_prediction(found, _normalized(project_dir, name, stamp), config)


def _thresholds(run: Run, threshold: float | None, core_threshold: float | None,
                seeds: str | None) -> tuple[float, float, str]:
    """The instance settings as cache keys: None = the run's validated one, thresholds rounded to 0.001.

    A run without the cell-core output ignores the seed settings, so their keys are always the run's own.
    """
    chosen = run.instance_config()
    if threshold is None:
        threshold = chosen.threshold
    if core_threshold is None or not run.config.separation:
        core_threshold = chosen.core_threshold
    if seeds is None or not run.config.separation:
        seeds = chosen.seeds
    return round(float(threshold), 3), round(float(core_threshold), 3), seeds


def segmentation(run: Run, project: Project, name: str, threshold: float | None = None,
                 core_threshold: float | None = None, seeds: str | None = None) -> Segmentation:
    """Cells (and nuclei) of a project image.

    ``threshold`` (cell probability), ``seeds`` ("core" or "nuclei") and ``core_threshold`` (the cell cores that
    seed the watershed; runs with the cell-core output): None = the run's validated one.
    """
    return _segmentation(*_result_key(run, project, name),
                         *_thresholds(run, threshold, core_threshold, seeds))


class ExportWriter:
    """One background thread that writes files no page should wait for (the exports kept under each project's
    ``predictions/<run>/``), at a low CPU priority. Each job has a key (what it writes) and a state (what the
    files should hold): a state already on disk, queued or being written is not written again, and of several
    states queued for one key in quick succession only the newest is written."""

    MAX_REMEMBERED = 256  # keys whose state on disk is remembered (least recently written first out)

    def __init__(self) -> None:
        self._changed = threading.Condition()  # guards everything below; notified when a job is queued or ends
        self._on_disk: collections.OrderedDict[Hashable, Hashable] = collections.OrderedDict()
        self._queued: collections.OrderedDict[Hashable, tuple[Hashable, Callable[[], object]]] = \
            collections.OrderedDict()
        self._writing: tuple[Hashable, Hashable] | None = None
        self._problems: dict[Hashable, str] = {}
        self._thread: threading.Thread | None = None

    def wanted(self, key: Hashable, state: Hashable) -> bool:
        """Whether ``state`` of ``key`` is neither on disk nor on its way there."""
        with self._changed:
            queued = self._queued.get(key)
            return state != self._on_disk.get(key) and (queued is None or queued[0] != state) \
                and self._writing != (key, state)

    def submit(self, key: Hashable, state: Hashable, write: Callable[[], object]) -> None:
        """Queue ``write`` to bring ``key`` to ``state``, replacing a queued job of the same key."""
        with self._changed:
            self._queued.pop(key, None)
            self._queued[key] = (state, write)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="impartial-export-writer", daemon=True)
                self._thread.start()
            self._changed.notify_all()

    def problem(self, key: Hashable) -> str | None:
        """Why the last write of ``key`` failed, or None."""
        with self._changed:
            return self._problems.get(key)

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait until nothing is queued or being written; False when ``timeout_s`` passed first."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._queued and self._writing is None, timeout_s)

    def _work(self) -> None:
        lower_thread_priority()  # the pages of every session come first
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._queued)
                key, (state, write) = self._queued.popitem(last=False)
                self._writing = (key, state)
            try:
                write()
                problem = None
            except Exception as error:  # noqa: BLE001 - whatever went wrong, the thread serves the next job
                log.warning("writing the exports %s failed: %s", key, error)
                problem = str(error) or type(error).__name__
            with self._changed:
                self._writing = None
                self._record(key, state, problem)
                self._changed.notify_all()

    def _record(self, key: Hashable, state: Hashable, problem: str | None) -> None:
        self._on_disk.pop(key, None)
        self._problems.pop(key, None)
        if problem is not None:
            self._problems[key] = problem
            return
        self._on_disk[key] = state
        while len(self._on_disk) > self.MAX_REMEMBERED:
            self._on_disk.popitem(last=False)


_export_writer = ExportWriter()


def _export_key(run: Run, project: Project, name: str) -> tuple[str, str, str]:
    return str(run.dir), str(project.dir), name


def keep_exports(run: Run, project: Project, name: str, threshold: float | None = None,
                 core_threshold: float | None = None, seeds: str | None = None) -> dict[str, str]:
    """Keep every export format of one image (npz, csv, tiff, roi, geojson) under the project's
    ``predictions/<run>/`` folder for the cells found with these thresholds (see :func:`segmentation`); returns
    the file names by format at once.

    The files are written in the background (no page waits for them), and only when they would hold other
    settings (or another checkpoint, image, pixel size) than these. The CSV gives µm figures when the project's
    pixel size is known. :func:`export_problem` says when the last write failed.
    """
    settings = _thresholds(run, threshold, core_threshold, seeds)
    key = _export_key(run, project, name)
    state = (checkpoint_stamp(run.dir), project.image_stamp(name), settings, project.pixel_size_um)
    if _export_writer.wanted(key, state):
        _export_writer.submit(key, state, functools.partial(
            _write_exports, project, run.dir.name, name, segmentation(run, project, name, *settings)))
    return {kind: export_file_name(name, kind) for kind in EXPORT_FORMATS}


def _write_exports(project: Project, run_id: str, name: str, found: Segmentation) -> None:
    """Write every export format of one image's cells under ``predictions/<run_id>/``, unless the project or the
    image was removed since the page asked for them (no folder of a deleted project comes back)."""
    if not project.dir.is_dir() or name not in project.images():
        return
    export_segmentation(project.prediction_dir(run_id), name, project.load_image(name), found, project.channels,
                        pixel_size_um=project.pixel_size_um)


def export_problem(run: Run, project: Project, name: str) -> str | None:
    """Why the last background write of this image's kept exports failed, or None."""
    return _export_writer.problem(_export_key(run, project, name))


def wait_for_exports(timeout_s: float | None = None) -> bool:
    """Wait until the kept exports queued so far are written (tests, shutdown); False on a timeout."""
    return _export_writer.wait(timeout_s)


def export_bytes(found: Segmentation, project: Project, name: str, kind: str) -> bytes:
    """One export format (``npz``, ``csv``, ``tiff`` or ``roi``) of cells already found, as bytes.

    Written to a temporary folder, so two sessions exporting the same image with other thresholds never read
    each other's file; meant for a download button's deferred data (it runs when the button is pressed).
    """
    with tempfile.TemporaryDirectory(prefix="impartial-export-") as folder:
        paths = export_segmentation(folder, name, project.load_image(name), found, project.channels, formats=(kind,),
                                    pixel_size_um=project.pixel_size_um)
        return paths[kind].read_bytes()


def _heat_map(found: Prediction, which: str) -> tuple[np.ndarray, float | None, str]:
    """The (H, W) values of heat map ``which`` of a prediction, its fixed top (None: the map's maximum) and its
    colour scale."""
    kind, _, class_name = which.partition(":")
    if kind == "entropy":
        return found.entropy(), 1.0, "Inferno"
    if kind == "probability":
        return found.class_probabilities()[class_name], 1.0, "Viridis"
    if kind == "variance":
        return found.class_variances()[class_name], None, "Magma"
    if kind == "core":
        return found.core, 1.0, "Viridis"
    if kind == "core_variance":
        return found.core_variance, None, "Magma"
    raise ValueError(f"no heat map '{which}'")


@st.cache_resource(max_entries=64, show_spinner=False)
def _figure(run_dir: str, run_key: tuple[int, ...], project_dir: str, name: str, stamp: int, which: str,
            title: str) -> go.Figure:
    values, top, colorscale = _heat_map(_prediction(run_dir, run_key, project_dir, name, stamp), which)
    return heatmap(values, title, zmax=top, colorscale=colorscale)


def figure(run: Run, project: Project, name: str, which: str, title: str) -> go.Figure:
    """A zoomable plotly heat map of the run's prediction of a project image, built once per checkpoint set and
    image.

    ``which``: ``entropy``, ``probability:<class>``, ``variance:<class>``, ``core`` or ``core_variance``.
    The figure is shared by all sessions: never change it.
    """
    return _figure(*_result_key(run, project, name), which, title)


@dataclasses.dataclass(frozen=True)
class HeatPicture:
    """A heat map as PNG bytes with its colour bar below it, and the value at the bar's right end (left: 0)."""

    png: bytes
    top: float


@st.cache_resource(max_entries=64, show_spinner=False)
def _heat_picture(run_dir: str, run_key: tuple[int, ...], project_dir: str, name: str, stamp: int,
                  which: str) -> HeatPicture:
    values, top, colorscale = _heat_map(_prediction(run_dir, run_key, project_dir, name, stamp), which)
    top = float(values.max()) if top is None else top
    return HeatPicture(png_bytes(heat_picture(values, top, colorscale)), top)  # (colormap guards a top of 0)


def heat(run: Run, project: Project, name: str, which: str) -> HeatPicture:
    """Heat map ``which`` (as in :func:`figure`) as a picture: far quicker for a browser to draw than the figure."""
    return _heat_picture(*_result_key(run, project, name), which)


LABEL_OUTLINE = "#00ffff"


@st.cache_data(max_entries=32, show_spinner=False)
def _outlined(run_dir: str, run_key: tuple[int, ...], project_dir: str, name: str, stamp: int,
              display: ChannelDisplay, threshold: float, core_threshold: float, seeds: str, color: str,
              opacity: float, labels_stamp: int | None) -> bytes:
    found = _segmentation(run_dir, run_key, project_dir, name, stamp, threshold, core_threshold, seeds)
    composite = _composite(project_dir, name, stamp, display)
    # at most MAX_PICTURE_SIDE a side, as the heat maps: at 2048 x 2048, outlining and encoding every pixel took
    # a second per view, for a page column a third as wide
    step = picture_step(composite.shape)
    picture = outline(composite[::step, ::step], found.cells[::step, ::step], color, opacity)
    if labels_stamp is not None:
        picture = outline(picture, Project(project_dir).load_labels(name)[::step, ::step], LABEL_OUTLINE, opacity)
    return png_bytes(picture)


def outlined(run: Run, project: Project, name: str, threshold: float | None = None,
             core_threshold: float | None = None, seeds: str | None = None, color: str = "#ffff00",
             opacity: float = 1.0, display: ChannelDisplay | None = None, labels: bool = False) -> bytes:
    """PNG of the image's composite (``display``: the project's settings when None) with the outline of every cell
    found with these thresholds (see :func:`segmentation`) in ``color`` at ``opacity``, and with ``labels`` the
    outlines of the image's labels (when it has them) in ``LABEL_OUTLINE``."""
    labels_stamp = project.annotation_stamp(name)[0] if labels else None
    return _outlined(*_result_key(run, project, name),
                     display or ChannelDisplay.of_project(project), *_thresholds(run, threshold, core_threshold, seeds),
                     color, round(float(opacity), 3), labels_stamp)


@st.cache_data(max_entries=32, show_spinner=False)
def _scores(run_dir: str, run_key: tuple[int, ...], project_dir: str, name: str, stamp: int,
            annotations: tuple[int | None, int | None], threshold: float, core_threshold: float,
            seeds: str) -> dict[str, float] | None:
    labels = Project(project_dir).load_labels(name)
    if labels is None:
        return None
    return evaluate(labels, _segmentation(run_dir, run_key, project_dir, name, stamp, threshold, core_threshold,
                                          seeds).cells)


def scores(run: Run, project: Project, name: str, threshold: float | None = None,
           core_threshold: float | None = None, seeds: str | None = None) -> dict[str, float] | None:
    """The cells found with these thresholds scored against the image's labels (``metrics.evaluate``), or
    None when the image has no labels."""
    return _scores(*_result_key(run, project, name),
                   project.annotation_stamp(name), *_thresholds(run, threshold, core_threshold, seeds))


@st.cache_data(max_entries=32, show_spinner=False)
def _findings(run_dir: str, run_key: tuple[int, ...], project_dir: str, name: str, stamp: int,
              annotations: tuple[int | None, int | None], threshold: float) -> list[Finding]:
    project, config = Project(project_dir), Run.load(run_dir).config
    scribbles, val_mask = project.load_scribbles(name), project.load_val_mask(name)
    if scribbles.shape[-1] != config.n_scribble_channels:  # the project's classes changed since the run trained
        scribbles = val_mask = None
    return prediction_findings(_prediction(run_dir, run_key, project_dir, name, stamp), config, scribbles, val_mask,
                               threshold)


def findings(run: Run, project: Project, name: str, threshold: float | None = None) -> list[Finding]:
    """Signs in the run's prediction of a project image that the model has not yet learned to tell cells from
    background, with the strokes to draw next (:func:`impartial.diagnostics.prediction_findings`, the image's
    scribbles and validation box; ``threshold`` None = the run's validated cell threshold)."""
    threshold = _thresholds(run, threshold, None, None)[0]
    return _findings(*_result_key(run, project, name),
                     project.annotation_stamp(name), threshold)


def run_zip(run_dir: Path) -> bytes:
    """The run folder (config, thresholds, history, status, checkpoints) as zip bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in result_files(run_dir):
            archive.write(path, Path(run_dir.name) / path.relative_to(run_dir))
    return buffer.getvalue()
