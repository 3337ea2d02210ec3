"""The run folder: a self-describing, reloadable record of one training run.

```
RUN_DIR/config.json        the RunConfig that trained it
        status.json        state (running | done | stopped | interrupted | failed), epoch, heartbeat, pid
        history.csv        one row per epoch: losses, validation loss and learning rate
        thresholds.json    instance settings chosen on the validation scribbles (thresholds, seed source)
        checkpoints/cycle_K.pt   best-validation weights of ensemble cycle K (loaded with weights_only=True)
        state.pt           everything needed to resume after a stop or crash
```
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from .config import RunConfig
from .errors import InputError
from .storage import write_json

CONFIG_FILE = "config.json"
STATUS_FILE = "status.json"
HISTORY_FILE = "history.csv"
THRESHOLDS_FILE = "thresholds.json"
STATE_FILE = "state.pt"
CHECKPOINT_DIR = "checkpoints"
HISTORY_COLUMNS = ["epoch", "cycle", "elapsed_s", "scribble", "rec", "reg", "sep", "total", "val", "lr"]

# A "running" run whose heartbeat is older than this is treated as dead even if its pid was reused.
STALE_AFTER_S = 15 * 60
# Tells this process from an earlier one that had the same pid (pid 1 in a container after a restart).
PROCESS_ID = uuid.uuid4().hex


def checkpoint_paths(run_dir: str | Path) -> list[Path]:
    """Ensemble checkpoints of a run, in cycle order."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    return sorted(folder.glob("cycle_*.pt"), key=lambda path: int(path.stem.split("_")[1]))


def write_status(run_dir: str | Path, state: str, **fields: Any) -> dict[str, Any]:
    """Record the run's state with this process's pid and id and a fresh heartbeat."""
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


def read_thresholds(run_dir: str | Path) -> dict[str, float | str]:
    """The instance settings chosen after training: thresholds (numbers) and the seed source (a name).

    A damaged file raises InputError naming it."""
    path = Path(run_dir) / THRESHOLDS_FILE
    if not path.exists():
        return {}
    try:
        values = json.loads(path.read_text())
        return {key: value if isinstance(value, str) else float(value) for key, value in values.items()}
    except (OSError, ValueError, TypeError, AttributeError):
        raise InputError("the chosen thresholds are damaged; delete the file to use the configured ones",
                         path) from None


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
    thresholds: dict[str, float] = field(default_factory=dict)
    checkpoints: list[Path] = field(default_factory=list)

    @classmethod
    def load(cls, run_dir: str | Path) -> Run:
        run_dir = Path(run_dir)
        if not (run_dir / CONFIG_FILE).exists():
            raise InputError("not a run folder (no config.json)", run_dir)
        return cls(dir=run_dir, config=RunConfig.load(run_dir / CONFIG_FILE),
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
