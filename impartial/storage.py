"""Atomic file writes: a crash mid-save never leaves a half-written file behind.

Every writer goes to a temporary file in the target's folder and is renamed over the
target only when complete (``os.replace`` is atomic on POSIX and Windows). The data reach the disk
(fsync) before the rename, and the folder entry after it, so a power cut leaves the old file or the
new one, never an empty one. Files get the permissions a plain ``open`` would give them (0666 less
the umask), so a shared data volume stays readable by the lab's other accounts.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

_UMASK = os.umask(0)  # read once, at import: os.umask can only be read by setting it
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success.

    The temporary name keeps the target's suffix so libraries that choose a format by
    extension (tifffile, PIL) behave as they would on the final name.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}", dir=target.parent)
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        yield tmp
        _flush_to_disk(tmp)
        os.chmod(tmp, FILE_MODE)  # mkstemp creates 0600
        os.replace(tmp, target)
        _flush_to_disk(target.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _flush_to_disk(path: Path) -> None:
    """fsync a file or a folder (folders cannot be opened on Windows: skipped there)."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass  # some file systems (and folders on some platforms) do not support fsync
    finally:
        os.close(descriptor)


def write_bytes(target: str | Path, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text(target: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    write_bytes(target, text.encode("utf-8"))


def write_json(target: str | Path, value: Any) -> None:
    """Write ``value`` as indented JSON to ``target`` atomically."""
    write_text(target, json.dumps(value, indent=2, sort_keys=False) + "\n")


def write_with(target: str | Path, writer: Callable[[BinaryIO], None]) -> None:
    """Atomically write whatever ``writer`` puts into a binary stream."""
    buffer = io.BytesIO()
    writer(buffer)
    write_bytes(target, buffer.getvalue())


NPZ_COMPRESSLEVEL = 1  # scribbles, masks and probability maps compress well at the fastest level


def write_npz(target: str | Path, compress: bool = True, **arrays: np.ndarray) -> None:
    """Atomically save arrays as an ``.npz`` archive (loadable with ``np.load(..., allow_pickle=False)``).

    Compressed at zlib's fastest level: on a 4000 x 4000 scribble file it writes about twice as fast as
    ``np.savez_compressed`` and reads four times as fast, for a few more kilobytes.
    """
    def write(stream: BinaryIO) -> None:
        method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
        with zipfile.ZipFile(stream, "w", compression=method, compresslevel=NPZ_COMPRESSLEVEL) as archive:
            for key, value in arrays.items():
                with archive.open(f"{key}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)

    write_with(target, write)
