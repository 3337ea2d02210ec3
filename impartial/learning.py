"""The learning loop's record: a project's learning curve, scores on labelled images, and a methods export.

Every run keeps what it trained on and how good it is (:mod:`impartial.runs`). Here those records become one
table per project (quality against strokes and annotation minutes, run after run), runs are scored on labelled
images they did not train on, and a run is packed into a zip for a methods section, from which its exact
scribbles can be put back into a project.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import json
import platform
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError
from .metrics import instance_scores
from .project import Project
from .results import project_segmentation
from .runs import (
    CONFIG_FILE,
    HISTORY_FILE,
    QUALITY_FILE,
    SNAPSHOT_DIR,
    THRESHOLDS_FILE,
    TRAINING_DATA_FILE,
    Run,
    load_scribble_snapshot,
    read_quality,
    read_training_data,
    write_quality,
)

MAX_LABELLED_IMAGES = 3  # labelled images a run is scored on: enough for a trend, cheap enough after each run
CURVE_COLUMNS = ["run", "strokes", "scribbled_pixels", "annotation_minutes", "validation_accuracy",
                 "stroke_consistency", "f1_unseen", "ap_unseen", "unseen_images"]
PACKAGES = ("impartial", "torch", "numpy", "scipy", "scikit-image", "pandas", "streamlit")


def score_on_labelled_images(run: Run, project: Project, limit: int = MAX_LABELLED_IMAGES) -> dict[str, dict]:
    """Score a run on up to ``limit`` of the project's labelled images it did not train on; the scores (F1, AP
    at IoU 0.5 and the counts per image) are added to the run's quality record and returned. Cells kept in the
    run folder (results.prepare_results) are used, not found again."""
    trained = set(read_training_data(run.dir).get("images", {}))
    damaged = project.damaged_files()
    unseen = [name for name in project.images() if name not in trained and name not in damaged
              and project.has_labels(name)][:limit]
    scores = {}
    for name in unseen:
        cells = project_segmentation(run, project, name).cells
        scores[name] = {key: float(value) for key, value in instance_scores(project.load_labels(name), cells).items()}
    if scores:
        write_quality(run.dir, labelled=scores)
    return scores


def learning_curve(project: Project) -> pd.DataFrame:
    """One row per finished run of the project, oldest first: what it trained on and how good it is.

    Columns: ``CURVE_COLUMNS``. ``strokes`` and ``scribbled_pixels`` add up every class and the background;
    the ``*_unseen`` scores are means over the labelled images the run did not train on (NaN without any).
    Runs whose records are missing or damaged are left out.
    """
    rows = []
    for info in project.runs():
        with contextlib.suppress(InputError):
            data, quality = read_training_data(info.dir), read_quality(info.dir)
            if not data or not quality:
                continue
            labelled = list(quality.get("labelled", {}).values())
            rows.append({"run": info.id, "strokes": sum(data["strokes"].values()),
                         "scribbled_pixels": sum(data["pixels"].values()),
                         "annotation_minutes": data.get("annotation_minutes"),
                         "validation_accuracy": quality.get("validation_accuracy"),
                         "stroke_consistency": quality.get("stroke_consistency"),
                         "f1_unseen": np.mean([s["f1"] for s in labelled]) if labelled else np.nan,
                         "ap_unseen": np.mean([s["ap"] for s in labelled]) if labelled else np.nan,
                         "unseen_images": len(labelled), "recorded": data.get("recorded", 0.0)})
    # in the order the runs started: run ids sort by the second only
    table = pd.DataFrame(rows, columns=[*CURVE_COLUMNS, "recorded"]).sort_values("recorded", kind="stable")
    numbers = {"annotation_minutes": float, "validation_accuracy": float, "stroke_consistency": float}
    return table[CURVE_COLUMNS].reset_index(drop=True).astype(numbers)


def environment(device: str) -> dict[str, str]:
    """Package versions, Python, the platform and the device: what a methods section states."""
    versions = {}
    for package in PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[package] = importlib.metadata.version(package)
    return {"python": platform.python_version(), "platform": platform.platform(), "device": device, **versions}


def methods_export(run: Run, curve: pd.DataFrame, device: str) -> bytes:
    """A zip for a methods section: the run's config, thresholds, quality, training-data record, history and
    scribble snapshot, the project's learning curve and ``environment.json``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in (CONFIG_FILE, THRESHOLDS_FILE, QUALITY_FILE, TRAINING_DATA_FILE, HISTORY_FILE):
            if (run.dir / name).exists():
                archive.write(run.dir / name, name)
        for path in sorted((run.dir / SNAPSHOT_DIR).glob("*.npz")):
            archive.write(path, f"{SNAPSHOT_DIR}/{path.name}")
        archive.writestr("learning_curve.csv", curve.to_csv(index=False))
        archive.writestr("environment.json", json.dumps(environment(device), indent=2))
    return buffer.getvalue()


def restore_scribbles(source: Run | str | Path, project: Project, user: str | None = None) -> list[str]:
    """Put the scribbles a run trained on back into the project's images of the same names; returns them.

    ``source`` is a run or a methods-export zip. Each image's current scribbles are replaced (one edit its
    ``user`` can undo). InputError naming what does not fit: an image missing from the project or scribbles of
    another shape or class layout; nothing is changed then.
    """
    snapshot = _snapshot(source)
    if not snapshot:
        raise InputError("holds no scribble snapshot (runs from before snapshots were kept have none)", str(source))
    missing = sorted(set(snapshot) - set(project.images()))
    if missing:
        raise InputError(f"the project has no image(s) {missing} to put the scribbles on", project.name)
    expected = {name: (*project.image_shape(name), project.n_scribble_channels) for name in snapshot}
    wrong = [name for name, (scribbles, _) in snapshot.items() if scribbles.shape != expected[name]]
    if wrong:
        raise InputError(f"the scribbles of {wrong} do not fit the project's images or classes", project.name)
    for name, (scribbles, val_mask) in snapshot.items():
        project.save_scribbles(name, scribbles, val_mask=val_mask, user=user)
    return sorted(snapshot)


def _snapshot(source: Run | str | Path) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    if isinstance(source, Run):
        return load_scribble_snapshot(source.dir)
    snapshot = {}
    try:
        with zipfile.ZipFile(source) as archive:
            for member in archive.namelist():
                if member.startswith(f"{SNAPSHOT_DIR}/") and member.endswith(".npz"):
                    with archive.open(member) as file, np.load(io.BytesIO(file.read()), allow_pickle=False) as data:
                        snapshot[Path(member).stem] = (data["scribble"],
                                                       data["val_mask"] if "val_mask" in data else None)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        raise InputError(f"is not a methods export ({type(error).__name__})", str(source)) from None
    return snapshot
