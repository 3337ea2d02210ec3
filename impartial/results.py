"""A run's results on project images, kept in the run folder (``predicted/<image>.npz``).

When a run ends, the image the Results page opens on is predicted and its cells found at once, while the run
still holds the device, so the page's first visitor waits for neither the MC-dropout passes nor the instance step
(on a shared server every session's page waits while they run). A kept prediction is used only for the
checkpoints, the image file and the number of dropout passes it was made with, its cells only for the instance
settings they were found with; anything else is computed afresh. The folder is a cache: a damaged or stale file is
computed again, the run's result files leave it out, and only a project's newest runs keep theirs (``KEPT_RUNS``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import zipfile
from pathlib import Path

import numpy as np

from .config import InstanceConfig
from .pipeline import Segmentation, segment_prediction
from .predict import Prediction, TaskPrediction, predict_image
from .project import Project
from .runs import PREDICTED_DIR, Run, checkpoint_stamp
from .storage import write_npz

log = logging.getLogger(__name__)

# Runs of a project (newest first) whose kept results stay on disk: about 45 MB each for a 2048 x 2048 image.
KEPT_RUNS = 5
_PREDICTION_KEYS = ("class_counts", "class_names", "task_names", "class_segmentation", "class_segmentation_variance",
                    "entropy", "core_probability", "core_variance")


def kept_prediction(run: Run, project: Project, name: str) -> Prediction | None:
    """The prediction of ``name`` kept in the run folder for the run's current checkpoints and the image's
    current file, or None (none kept, kept for other weights or another image file, or unreadable)."""
    arrays = _read(run, project, name, _PREDICTION_KEYS)
    return None if arrays is None else _from_arrays(arrays)


def kept_cells(run: Run, project: Project, name: str,
               config: InstanceConfig) -> tuple[np.ndarray, np.ndarray | None] | None:
    """The cells and nuclei (or None) kept with the prediction of ``name`` when they were found with ``config``
    and the prediction is current (see :func:`kept_prediction`); else None."""
    arrays = _read(run, project, name, ("instance_settings", "cells", "nuclei"))
    if arrays is None or "cells" not in arrays or str(arrays["instance_settings"]) != _settings(config):
        return None
    return arrays["cells"], arrays.get("nuclei")


def project_segmentation(run: Run, project: Project, name: str, keep: bool = False) -> Segmentation:
    """The run's MC-dropout prediction of a project image with the cells found at the run's own instance settings:
    whatever is kept and current is read back, the rest computed (and, with ``keep``, kept in the run folder)."""
    config = run.instance_config()
    prediction = kept_prediction(run, project, name)
    cells = None if prediction is None else kept_cells(run, project, name, config)
    if cells is not None:
        return Segmentation(prediction, *cells)
    image = project.normalized(name)
    found = segment_prediction(prediction or predict_image(run, image), image, config)
    if keep:
        _keep(run, project, name, found, config)
    return found


def opening_image(project: Project) -> str | None:
    """The image the Results page shows first: the first image (sorted by name) that is not damaged."""
    damaged = project.damaged_files()
    return next((name for name in project.images() if name not in damaged), None)


def prepare_results(run: Run, project: Project) -> str | None:
    """Predict the image the Results page opens on, find its cells and keep both in the run folder; returns its
    name (None when the run has no checkpoint or the project no usable image)."""
    name = opening_image(project)
    if name is None or not run.checkpoints:
        return None
    project_segmentation(run, project, name, keep=True)
    _forget_older_results(project, run)
    return name


def _forget_older_results(project: Project, run: Run) -> None:
    """Remove the kept results of all but the ``KEPT_RUNS`` newest runs that have some (and ``run``'s): a
    cache must not grow with the project's history."""
    keeping = [info.dir for info in project.runs() if (info.dir / PREDICTED_DIR).is_dir()]
    for folder in keeping[KEPT_RUNS:]:
        if folder != run.dir:
            shutil.rmtree(folder / PREDICTED_DIR, ignore_errors=True)  # a page reading one computes it again


def _path(run: Run, name: str) -> Path:
    return run.dir / PREDICTED_DIR / f"{name}.npz"


def _stamp(run: Run, project: Project, name: str) -> list[int]:
    """What a kept prediction depends on: the checkpoints' and the image's modification times, the passes."""
    return [*checkpoint_stamp(run.dir), project.image_stamp(name), run.config.predict.mcdrop]


def _settings(config: InstanceConfig) -> str:
    """The instance settings as kept cells' key, numbers to 0.001 (as the Results page's sliders and caches
    give them: a threshold chosen on a grid, 0.35000000000000003, is the page's 0.35)."""
    values = {key: round(value, 3) if isinstance(value, float) else value
              for key, value in dataclasses.asdict(config).items()}
    return json.dumps(values, sort_keys=True)


def _read(run: Run, project: Project, name: str, keys: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    """The ``keys`` present in the kept file of ``name`` (only those are decompressed) when its stamp is
    current, else None."""
    path = _path(run, name)
    try:
        with np.load(path, allow_pickle=False) as archive:
            if archive["stamp"].tolist() != _stamp(run, project, name):
                return None
            return {key: archive[key] for key in keys if key in archive.files}
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        log.warning("the kept results %s are unreadable (%s): computing them again", path, error)
        return None


def _keep(run: Run, project: Project, name: str, found: Segmentation, config: InstanceConfig) -> None:
    arrays = {key: np.asarray(value) for key, value in found.prediction.arrays().items()}
    if found.nuclei is not None:
        arrays["nuclei"] = found.nuclei
    write_npz(_path(run, name), stamp=np.array(_stamp(run, project, name), np.int64),
              class_counts=np.array([len(task.class_names) for task in found.prediction.tasks], np.int64),
              instance_settings=np.str_(_settings(config)), cells=found.cells, **arrays)


def _from_arrays(arrays: dict[str, np.ndarray]) -> Prediction:
    """The inverse of :meth:`Prediction.arrays` (with the classes per task, ``class_counts``)."""
    ends = np.cumsum(arrays["class_counts"]).tolist()
    starts = [0, *ends[:-1]]
    names = [str(name) for name in arrays["class_names"]]
    tasks = [TaskPrediction(str(task), names[start:end], arrays["class_segmentation"][start:end],
                            arrays["class_segmentation_variance"][start:end], arrays["entropy"][index])
             for index, (task, start, end) in enumerate(zip(arrays["task_names"], starts, ends, strict=True))]
    return Prediction(tasks, arrays.get("core_probability"), arrays.get("core_variance"))
