"""The run folder: a self-describing, reloadable record of one training run.

```
RUN_DIR/config.json        the RunConfig that trained it
        status.json        state (running | done | stopped | interrupted | failed), epoch, heartbeat, pid
        history.csv        one row per epoch: losses, validation loss and learning rate
        thresholds.json    instance settings chosen on the validation scribbles (thresholds, seed source)
        quality.json       how good it is: validation-stroke accuracy, stroke consistency, scores on labelled images
        training_data.json what it trained on: strokes and pixels per class and image, annotation minutes
        scribbles/<image>.npz   the exact scribbles (and validation box) it trained on
        checkpoints/cycle_K.pt   best-validation weights of ensemble cycle K (loaded with weights_only=True)
        state.pt           everything needed to resume after a stop or crash
        preview.npz        the latest preview prediction (epoch, image name, the Prediction's arrays)
        focus.json         live runs: the image the user looks at, which the next preview shows
        predicted/<image>.npz   kept predictions of project images (results.py): a cache, not a result
```
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd
import torch

from .config import RunConfig
from .dataset import TrainingImage
from .errors import InputError
from .scribbles import scribble_counts, stroke_counts
from .storage import write_json, write_npz

CONFIG_FILE = "config.json"
STATUS_FILE = "status.json"
HISTORY_FILE = "history.csv"
THRESHOLDS_FILE = "thresholds.json"
QUALITY_FILE = "quality.json"
TRAINING_DATA_FILE = "training_data.json"
SNAPSHOT_DIR = "scribbles"
STATE_FILE = "state.pt"
PREVIEW_FILE = "preview.npz"
FOCUS_FILE = "focus.json"
PREDICTED_DIR = "predicted"
CHECKPOINT_DIR = "checkpoints"
_CHECKPOINT_PATTERN = "cycle_*.pt"
# What a trainer records in status.json; read_status adds "interrupted" (the process is gone), "new" (no status
# yet) and "missing" (no folder).
RunState = Literal["running", "done", "stopped", "failed"]
RUN_STATES: tuple[str, ...] = get_args(RunState)
HISTORY_COLUMNS = ["epoch", "cycle", "elapsed_s", "scribble", "rec", "reg", "sep", "total", "val", "lr"]

# A "running" run whose heartbeat is older than this is treated as dead even if its pid was reused.
STALE_AFTER_S = 15 * 60
# Tells this process from an earlier one that had the same pid (pid 1 in a container after a restart).
PROCESS_ID = uuid.uuid4().hex


def checkpoint_path(run_dir: str | Path, cycle: int) -> Path:
    """Where ensemble cycle ``cycle`` keeps its best-validation weights."""
    return Path(run_dir) / CHECKPOINT_DIR / f"cycle_{cycle}.pt"


def checkpoint_paths(run_dir: str | Path) -> list[Path]:
    """Ensemble checkpoints of a run, in cycle order."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    return sorted(folder.glob(_CHECKPOINT_PATTERN), key=lambda path: int(path.stem.split("_")[1]))


def checkpoint_stamp(run_dir: str | Path) -> tuple[int, ...]:
    """Modification times (ns) of a run's checkpoints: change when training adds or improves one."""
    return tuple(path.stat().st_mtime_ns for path in checkpoint_paths(run_dir))


def has_checkpoint(run_dir: str | Path) -> bool:
    """Whether the run has saved at least one checkpoint (it can predict)."""
    return any((Path(run_dir) / CHECKPOINT_DIR).glob(_CHECKPOINT_PATTERN))


def can_resume(run_dir: str | Path) -> bool:
    """Whether the run kept the training state a resume starts from."""
    return (Path(run_dir) / STATE_FILE).exists()


def result_files(run_dir: str | Path) -> list[Path]:
    """The files that make up the run's result, sorted: all but the resume-only state, the live preview, the
    kept predictions and hidden (temporary) files."""
    run_dir = Path(run_dir)
    return [path for path in sorted(run_dir.rglob("*"))
            if path.is_file() and path.name not in (STATE_FILE, PREVIEW_FILE) and not path.name.startswith(".")
            and path.relative_to(run_dir).parts[0] != PREDICTED_DIR]


def write_status(run_dir: str | Path, state: RunState, **fields: Any) -> dict[str, Any]:
    """Record the run's state with this process's pid and id and a fresh heartbeat."""
    if state not in RUN_STATES:
        raise ValueError(f"unknown run state '{state}' (one of {', '.join(RUN_STATES)})")
    status = {"state": state, "pid": os.getpid(), "process": PROCESS_ID, "updated": time.time(), **fields}
    write_json(Path(run_dir) / STATUS_FILE, status)
    return status


def read_status(run_dir: str | Path) -> dict[str, Any]:
    """The run's status; a "running" run whose process is gone reads as "interrupted"."""
    path = Path(run_dir) / STATUS_FILE
    try:
        status = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"state": "missing" if not Path(run_dir).exists() else "new"}
    if status.get("state") == "running" and not _still_running(status):
        status["state"] = "interrupted"
    return status


def _still_running(status: dict[str, Any]) -> bool:
    if time.time() - float(status.get("updated", 0)) > STALE_AFTER_S:
        return False
    pid = int(status.get("pid", -1))
    if pid == os.getpid():
        # In a container the server is pid 1 before and after a restart: only this very process counts.
        return status.get("process", PROCESS_ID) == PROCESS_ID
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def read_history(run_dir: str | Path) -> pd.DataFrame:
    """Per-epoch losses (empty frame with the usual columns when none yet); a damaged file raises InputError."""
    path = Path(run_dir) / HISTORY_FILE
    if not path.exists():
        return pd.DataFrame(columns=HISTORY_COLUMNS)
    try:
        history = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise InputError(f"the training history is damaged ({type(error).__name__})", path) from None
    if "epoch" not in history:
        raise InputError("the training history is damaged (no epoch column)", path)
    return history


def read_thresholds(run_dir: str | Path) -> dict[str, float | str | bool]:
    """The instance settings chosen after training: thresholds (numbers), the seed source (a name) and whether
    the membrane channel fills cells (true or false).

    A damaged file raises InputError naming it."""
    path = Path(run_dir) / THRESHOLDS_FILE
    if not path.exists():
        return {}
    try:
        values = json.loads(path.read_text())
        return {key: value if isinstance(value, str | bool) else float(value) for key, value in values.items()}
    except (OSError, ValueError, TypeError, AttributeError):
        raise InputError("the chosen thresholds are damaged; delete the file to use the configured ones",
                         path) from None


def _read_json_record(path: Path, what: str) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        record = None
    if not isinstance(record, dict):
        raise InputError(f"the {what} is damaged; delete the file to leave it out", path)
    return record


@dataclass
class Preview:
    """The trainer's latest preview: ``probabilities`` (classes, H, W) named by ``class_names``, ``entropy``
    (tasks, H, W), after ``epoch``, of the image called ``image`` ("" when the caller gave no name)."""

    epoch: int
    image: str
    class_names: list[str]
    probabilities: np.ndarray
    entropy: np.ndarray


def write_preview(run_dir: str | Path, epoch: int, image: str, arrays: dict[str, Any]) -> None:
    """Replace the run's preview with a prediction's arrays (:meth:`Prediction.arrays`)."""
    write_npz(Path(run_dir) / PREVIEW_FILE, epoch=np.int64(epoch), image=np.str_(image),
              **{key: np.asarray(value) for key, value in arrays.items()})


def read_preview(run_dir: str | Path) -> Preview | None:
    """The run's latest preview; None when there is none yet or it is being replaced right now."""
    try:
        with np.load(Path(run_dir) / PREVIEW_FILE, allow_pickle=False) as archive:
            return Preview(int(archive["epoch"]), str(archive["image"]) if "image" in archive else "",
                           [str(name) for name in archive["class_names"]], archive["class_segmentation"],
                           archive["entropy"])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None


def set_focus(run_dir: str | Path, image: str) -> None:
    """Name the image a live run previews (the one on the user's canvas)."""
    write_json(Path(run_dir) / FOCUS_FILE, {"image": image})


def focus(run_dir: str | Path) -> str | None:
    """The image a live run previews, None when not set or unreadable."""
    try:
        return str(json.loads((Path(run_dir) / FOCUS_FILE).read_text())["image"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_quality(run_dir: str | Path) -> dict[str, Any]:
    """The run's quality figures (see :func:`write_quality`); empty when none were measured."""
    return _read_json_record(Path(run_dir) / QUALITY_FILE, "quality record")


def write_quality(run_dir: str | Path, **figures: Any) -> dict[str, Any]:
    """Add figures to the run's quality record (``validation_accuracy``, ``stroke_consistency``, ``labelled``:
    scores per labelled image it did not train on); returns the whole record."""
    record = {**read_quality(run_dir), **figures}
    write_json(Path(run_dir) / QUALITY_FILE, record)
    return record


def read_training_data(run_dir: str | Path) -> dict[str, Any]:
    """What the run trained on (see :func:`save_training_data`); empty for runs made before it was recorded."""
    return _read_json_record(Path(run_dir) / TRAINING_DATA_FILE, "record of the training data")


def save_training_data(run_dir: str | Path, dataset: list[TrainingImage], config: RunConfig,
                       annotation_minutes: float | None = None) -> dict[str, Any]:
    """Keep the exact scribbles a run trains on (``scribbles/<image>.npz``) and a summary of them.

    The summary gives per image and in total the strokes (separate pieces) and pixels per class name and for the
    background, a SHA-1 of the scribbles, and the annotation time when the caller knows it.
    """
    images, totals = {}, {"strokes": {}, "pixels": {}}
    for item in dataset:
        arrays = {"scribble": item.scribbles}
        if item.val_mask is not None:
            arrays["val_mask"] = item.val_mask
        write_npz(Path(run_dir) / SNAPSHOT_DIR / f"{item.name}.npz", **arrays)
        counts = {"strokes": stroke_counts(item.scribbles, config), "pixels": scribble_counts(item.scribbles, config)}
        for kind, per_class in counts.items():
            for name, value in per_class.items():
                totals[kind][name] = totals[kind].get(name, 0) + value
        images[item.name] = {**counts, "sha1": hashlib.sha1(np.ascontiguousarray(item.scribbles)).hexdigest()}
    record = {"images": images, **totals, "annotation_minutes": annotation_minutes, "recorded": time.time()}
    write_json(Path(run_dir) / TRAINING_DATA_FILE, record)
    return record


def load_scribble_snapshot(run_dir: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """The scribbles a run trained on: image name -> (scribbles (H, W, S), validation box or None)."""
    snapshot = {}
    for path in sorted((Path(run_dir) / SNAPSHOT_DIR).glob("*.npz")):
        try:
            with np.load(path, allow_pickle=False) as archive:
                snapshot[path.stem] = (archive["scribble"], archive["val_mask"] if "val_mask" in archive else None)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
            raise InputError(f"the scribble snapshot cannot be read ({type(error).__name__})", path) from None
    return snapshot


def load_weights(path: str | Path, device: torch.device) -> dict[str, Any]:
    """A checkpoint or training state, loaded with ``weights_only=True``; a damaged file raises InputError.

    torch's own message for a refused file suggests ``weights_only=False``, which would run code from the file:
    the user sees only that the file is damaged.
    """
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise InputError("not found", path) from None
    except Exception as error:  # torch raises many kinds (RuntimeError, UnpicklingError, EOFError, ...)
        raise InputError(f"cannot load it: the file is damaged or not a weights file ({type(error).__name__})",
                         path) from None


@dataclass
class Run:
    """A trained (or training) run loaded from its folder."""

    dir: Path
    config: RunConfig
    thresholds: dict[str, float | str | bool] = field(default_factory=dict)
    checkpoints: list[Path] = field(default_factory=list)

    @classmethod
    def load(cls, run_dir: str | Path) -> Run:
        run_dir = Path(run_dir)
        if not (run_dir / CONFIG_FILE).exists():
            raise InputError("not a run folder (no config.json)", run_dir)
        return cls(dir=run_dir, config=RunConfig.load_run(run_dir / CONFIG_FILE),
                   thresholds=read_thresholds(run_dir), checkpoints=checkpoint_paths(run_dir))

    @property
    def status(self) -> dict[str, Any]:
        return read_status(self.dir)

    @property
    def history(self) -> pd.DataFrame:
        return read_history(self.dir)

    def instance_config(self):
        """The run's instance settings with the thresholds chosen on its validation scribbles."""
        return dataclasses.replace(self.config.instances, **self.thresholds)

    def require_checkpoints(self) -> list[Path]:
        if not self.checkpoints:
            raise InputError("this run has no checkpoint yet: train it for at least one epoch", self.dir)
        return self.checkpoints
