"""Cached per-image computations: normalised images, composites, predictions, segmentations, exports.

Cache keys carry file modification times (``stamp``), so a re-uploaded image or a retrained run is
never served stale. Results are shared by all sessions and must be treated as read-only.
"""

from __future__ import annotations

import dataclasses
import io
import zipfile
from pathlib import Path

import numpy as np
import streamlit as st

from impartial.pipeline import Segmentation, export_segmentation, segment_prediction
from impartial.predict import Prediction, predict_image
from impartial.project import Project
from impartial.runs import STATE_FILE, Run, checkpoint_paths

from .render import composite

RUN_ZIP_SKIPS = (STATE_FILE, "preview.npz")  # resume-only state and the live preview are not part of a result


def image_stamp(project: Project, name: str) -> int:
    """Modification time (ns) of a project image: changes when the image is replaced."""
    return (project.dir / "images" / f"{name}.tif").stat().st_mtime_ns


def run_stamp(run_dir: Path) -> tuple[int, ...]:
    """Modification times of a run's checkpoints: change when training adds or improves one."""
    return tuple(path.stat().st_mtime_ns for path in checkpoint_paths(run_dir))


@st.cache_data(max_entries=16, show_spinner=False)
def _normalized(project_dir: str, name: str, stamp: int) -> np.ndarray:
    return Project(project_dir).normalized(name)


def normalized(project: Project, name: str) -> np.ndarray:
    """(C, H, W) float32 normalised image."""
    return _normalized(str(project.dir), name, image_stamp(project, name))


@st.cache_data(max_entries=64, show_spinner=False)
def _composite(project_dir: str, name: str, stamp: int, colors: tuple[str, ...],
               contrast: tuple[tuple[float, float], ...]) -> np.ndarray:
    return composite(_normalized(project_dir, name, stamp), list(colors), [list(pair) for pair in contrast])


def project_composite(project: Project, name: str) -> np.ndarray:
    """(H, W, 3) uint8 composite in the project's channel colours and contrast."""
    contrast = tuple(tuple(pair) for pair in project.contrast)
    return _composite(str(project.dir), name, image_stamp(project, name), tuple(project.colors), contrast)


@st.cache_resource(max_entries=16, show_spinner="Predicting with MC dropout ...")
def _prediction(run_dir: str, run_key: tuple[int, ...], project_dir: str, name: str, stamp: int) -> Prediction:
    return predict_image(Run.load(run_dir), _normalized(project_dir, name, stamp))


def prediction(run: Run, project: Project, name: str) -> Prediction:
    """The run's MC-dropout prediction of a project image (mean, variance, entropy per class)."""
    return _prediction(str(run.dir), run_stamp(run.dir), str(project.dir), name, image_stamp(project, name))


@st.cache_resource(max_entries=32, show_spinner="Finding cells ...")
def _segmentation(run_dir: str, run_key: tuple[int, ...], project_dir: str, name: str, stamp: int,
                  threshold: float, core_threshold: float, seeds: str) -> Segmentation:
    run = Run.load(run_dir)
    config = dataclasses.replace(run.instance_config(), threshold=threshold, core_threshold=core_threshold,
                                 seeds=seeds)
    found = _prediction(run_dir, run_key, project_dir, name, stamp)  # cached: only the instance step reruns
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
    return _segmentation(str(run.dir), run_stamp(run.dir), str(project.dir), name, image_stamp(project, name),
                         *_thresholds(run, threshold, core_threshold, seeds))


@st.cache_data(max_entries=8, show_spinner="Writing the exports ...")
def _exports(run_dir: str, run_key: tuple[int, ...], project_dir: str, name: str, stamp: int,
             threshold: float, core_threshold: float, seeds: str) -> dict[str, tuple[str, bytes]]:
    project = Project(project_dir)
    found = _segmentation(run_dir, run_key, project_dir, name, stamp, threshold, core_threshold, seeds)
    paths = export_segmentation(project.prediction_dir(Path(run_dir).name), name, project.load_image(name), found,
                                project.channels)
    return {kind: (path.name, path.read_bytes()) for kind, path in paths.items()}


def exports(run: Run, project: Project, name: str, threshold: float | None = None,
            core_threshold: float | None = None, seeds: str | None = None) -> dict[str, tuple[str, bytes]]:
    """Every export format of one image (npz, csv, tiff, roi) as (file name, bytes), for the cells found with
    these thresholds (see :func:`segmentation`); the files are also kept under the project's
    ``predictions/<run>/`` folder."""
    return _exports(str(run.dir), run_stamp(run.dir), str(project.dir), name, image_stamp(project, name),
                    *_thresholds(run, threshold, core_threshold, seeds))


def run_zip(run_dir: Path) -> bytes:
    """The run folder (config, thresholds, history, status, checkpoints) as zip bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(run_dir.rglob("*")):
            if path.is_file() and path.name not in RUN_ZIP_SKIPS and not path.name.startswith("."):
                archive.write(path, Path(run_dir.name) / path.relative_to(run_dir))
    return buffer.getvalue()
