"""One training per device across processes on a shared server.

The dashboard's job manager queues its own jobs, but a run started from the command line on the
same server (``impartial train --project ...`` over ssh) is another process. Both take the same
lock file under the data root before training, so whichever comes second waits for the device
instead of halving the speed of both (or running a GPU out of memory). The operating system
releases the lock when its holder exits, crashes included, so a dead run never blocks the device.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import filelock
import torch

from .storage import write_json

LOCK_DIR = ".device-locks"


def device_key(device: torch.device) -> str:
    """The lock's name for a device: ``cpu``, ``cuda0``, ``cuda1``, ..."""
    if device.type == "cuda":
        return f"cuda{device.index or 0}"
    return device.type


def describe_holder(data_root: str | Path, device: torch.device) -> str:
    """Who last took the device's lock (the holder while it is taken), for waiting messages."""
    try:
        holder = json.loads(_holder_path(data_root, device).read_text())
        started = time.strftime("%H:%M", time.localtime(holder["since"]))
        return f"{holder['what']} (started {started})"
    except (OSError, ValueError, KeyError):
        return "another training"


@contextlib.contextmanager
def device_turn(data_root: str | Path, device: torch.device, what: str,
                on_wait: Callable[[str], None] | None = None, stop_event: threading.Event | None = None,
                poll_s: float = 1.0) -> Iterator[bool]:
    """Hold ``device`` for one training; yields True once it is ours, False if stopped while waiting.

    Args:
        data_root: the server's data root; every process using it shares its locks.
        device: the device to train on.
        what: a description of this training, shown to whoever waits for it.
        on_wait: called once, with the holder's description, when the device is busy.
        stop_event: when set while waiting, give up (yield False) instead of waiting on.
        poll_s: seconds between checks of the stop event while waiting.
    """
    folder = Path(data_root) / LOCK_DIR
    folder.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(folder / f"{device_key(device)}.lock")
    told = False
    while True:
        try:
            lock.acquire(timeout=poll_s)
            break
        except filelock.Timeout:
            if not told and on_wait is not None:
                on_wait(describe_holder(data_root, device))
                told = True
            if stop_event is not None and stop_event.is_set():
                yield False
                return
    try:
        write_json(_holder_path(data_root, device), {"what": what, "pid": os.getpid(), "since": time.time()})
        yield True
    finally:
        lock.release()


def _holder_path(data_root: str | Path, device: torch.device) -> Path:
    return Path(data_root) / LOCK_DIR / f"{device_key(device)}.holder.json"
