"""Brush strokes as changes to an image's scribbles, and the per-image history that undoes them.

A stroke is a polyline in image coordinates (pixel ``(r, c)`` covers ``[r, r + 1) x [c, c + 1)``) swept
by a round brush. Applying it changes only the pixels it covers, so strokes drawn at the same time in
two browser tabs both land: each edit is read-modify-write of the current file (under the project's
lock), never "what this tab loaded plus its strokes".

Every edit is kept as a :class:`Change` (pixels, values before, values after) in the image's history
folder. Undo restores the *before* values only where the pixels still hold the *after* values, so undoing
one's own stroke never erases what someone drew over it since.

```
<history folder>/index.json     {"entries": [{"seq", "user", "op", "undone"}], "ops": [recent op ids],
                                 "active_s": annotation time, "last_edit": time of the last edit}
                 <seq>.npz      rows, cols (N,) int32; before, after (N, S) uint8
```

The annotation time adds the pause before each edit, up to ``IDLE_AFTER_S``: a longer pause was a break.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import storage
from .config import TaskConfig
from .errors import InputError

INDEX_FILE = "index.json"
HISTORY_LENGTH = 500  # changes kept per image (all users together); older ones can no longer be undone
REMEMBERED_OPS = 1000  # op ids kept to recognise an edit that arrives twice
IDLE_AFTER_S = 120.0  # a pause between two edits longer than this is not annotation time


@dataclass(frozen=True)
class Stroke:
    """One brush stroke.

    Attributes:
        points: (row, col) image coordinates along the stroke, at least one.
        width: brush diameter in image pixels.
        channel: the scribble channel it paints, or None for the eraser (clears every channel).
    """

    points: tuple[tuple[float, float], ...]
    width: float
    channel: int | None


@dataclass(frozen=True)
class Change:
    """Pixels an edit changed: ``rows``, ``cols`` (N,) and their scribble values ``before``/``after`` (N, S)."""

    rows: np.ndarray
    cols: np.ndarray
    before: np.ndarray
    after: np.ndarray

    @property
    def empty(self) -> bool:
        return self.rows.size == 0


def task_channels(tasks: Sequence[TaskConfig]) -> list[slice]:
    """The slice of scribble channels that belongs to each task."""
    starts = np.cumsum([0] + [task.n_scribble_channels for task in tasks])
    return [slice(int(start), int(stop)) for start, stop in zip(starts[:-1], starts[1:], strict=True)]


def stroke_pixels(stroke: Stroke, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the pixels a stroke covers inside an image of ``shape``.

    A pixel is covered when its centre lies within ``width / 2`` of the polyline; the pixel under each
    point is always covered, so a click paints at least one pixel whatever the width.
    """
    points = np.asarray(stroke.points, np.float64).reshape(-1, 2)
    radius = max(float(stroke.width), 1.0) / 2.0
    top, left = np.floor(points.min(axis=0) - radius).astype(int)
    bottom, right = np.ceil(points.max(axis=0) + radius).astype(int) + 1
    top, left = max(top, 0), max(left, 0)
    bottom, right = min(bottom, shape[0]), min(right, shape[1])
    if top >= bottom or left >= right:
        return np.zeros(0, np.int32), np.zeros(0, np.int32)
    centres = np.stack(np.mgrid[top:bottom, left:right], axis=-1) + 0.5  # (h, w, 2)
    covered = _distance_to_polyline(centres, points) <= radius
    under = np.floor(points).astype(int)
    inside = (under >= [top, left]).all(axis=1) & (under < [bottom, right]).all(axis=1)
    covered[under[inside, 0] - top, under[inside, 1] - left] = True
    rows, cols = np.nonzero(covered)
    return (rows + top).astype(np.int32), (cols + left).astype(np.int32)


def _distance_to_polyline(centres: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Distance from each of (..., 2) positions to the polyline through (P, 2) points."""
    starts, ends = (points[:-1], points[1:]) if len(points) > 1 else (points, points)
    best = np.full(centres.shape[:-1], np.inf)
    for start, end in zip(starts, ends, strict=True):
        direction = end - start
        length2 = float(direction @ direction)
        along = 0.0 if length2 == 0 else np.clip(((centres - start) @ direction) / length2, 0.0, 1.0)
        nearest = start + np.asarray(along)[..., None] * direction
        best = np.minimum(best, np.linalg.norm(centres - nearest, axis=-1))
    return best


def painted_values(before: np.ndarray, channel: int | None, tasks: Sequence[TaskConfig]) -> np.ndarray:
    """Scribble values (N, S) after painting pixels whose values were ``before`` (N, S).

    A class or background channel makes the pixel that class within its task (the task's other channels
    are cleared; other tasks keep theirs); ``channel`` None (the eraser) clears every channel.
    """
    after = before.copy()
    if channel is None:
        after[:] = 0
        return after
    owner = next((block for block in task_channels(tasks) if block.start <= channel < block.stop), None)
    if owner is None:
        raise InputError(f"scribble channel {channel} does not exist (the project has {after.shape[1]})")
    after[:, owner] = 0
    after[:, channel] = 1
    return after


def stroke_change(scribbles: np.ndarray, stroke: Stroke, tasks: Sequence[TaskConfig]) -> Change:
    """What a stroke would change in (H, W, S) scribbles: only the pixels whose values differ."""
    rows, cols = stroke_pixels(stroke, scribbles.shape[:2])
    before = scribbles[rows, cols]
    after = painted_values(before, stroke.channel, tasks)
    return _differing(rows, cols, before, after)


def replacement_change(scribbles: np.ndarray, replacement: np.ndarray) -> Change:
    """The change that turns ``scribbles`` into ``replacement`` (both (H, W, S)), e.g. Clear or automatic strokes."""
    rows, cols = np.nonzero((scribbles != replacement).any(axis=-1))
    return Change(rows.astype(np.int32), cols.astype(np.int32), scribbles[rows, cols], replacement[rows, cols])


def _differing(rows: np.ndarray, cols: np.ndarray, before: np.ndarray, after: np.ndarray) -> Change:
    differs = (before != after).any(axis=-1)
    return Change(rows[differs], cols[differs], before[differs], after[differs])


def apply_change(scribbles: np.ndarray, change: Change) -> None:
    """Write a change's *after* values into ``scribbles`` (in place)."""
    scribbles[change.rows, change.cols] = change.after


def revert_change(scribbles: np.ndarray, change: Change) -> int:
    """Undo a change in place where the pixels still hold its *after* values; returns how many were restored."""
    untouched = (scribbles[change.rows, change.cols] == change.after).all(axis=-1)
    scribbles[change.rows[untouched], change.cols[untouched]] = change.before[untouched]
    return int(untouched.sum())


def reapply_change(scribbles: np.ndarray, change: Change) -> int:
    """Redo a change in place where the pixels still hold its *before* values; returns how many were painted."""
    untouched = (scribbles[change.rows, change.cols] == change.before).all(axis=-1)
    scribbles[change.rows[untouched], change.cols[untouched]] = change.after[untouched]
    return int(untouched.sum())


class History:
    """The edits of one image, newest last, with undo and redo per user. Not locked: callers hold the lock."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def _index(self) -> dict:
        path = self.folder / INDEX_FILE
        if not path.exists():
            return {"entries": [], "ops": []}
        try:
            index = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise InputError(f"the stroke history cannot be read ({error})", path) from None
        if not isinstance(index, dict) or not isinstance(index.get("entries"), list):
            raise InputError("the stroke history is not a history index", path)
        return index

    def check(self) -> None:
        """Raise InputError naming the index file when it is damaged."""
        self._index()

    def seen(self, op: str) -> bool:
        """Whether an edit with this op id was already applied (a retried request)."""
        return op in self._index().get("ops", [])

    def record(self, change: Change, user: str, op: str) -> None:
        """Keep a new edit; the user's undone edits can no longer be redone (as in any editor).

        An empty change only remembers its op id.
        """
        index = self._index()
        if change.empty:
            self._save(index, index["entries"], op, edited=False)
            return
        kept = []
        for entry in index["entries"]:
            if entry["user"] == user and entry["undone"]:
                self._change_path(entry["seq"]).unlink(missing_ok=True)
            else:
                kept.append(entry)
        seq = max((entry["seq"] for entry in index["entries"]), default=0) + 1
        storage.write_npz(self._change_path(seq), rows=change.rows, cols=change.cols, before=change.before,
                          after=change.after)
        kept.append({"seq": seq, "user": user, "op": op, "undone": False})
        for entry in kept[:-HISTORY_LENGTH]:
            self._change_path(entry["seq"]).unlink(missing_ok=True)
        self._save(index, kept[-HISTORY_LENGTH:], op)

    def undo(self, scribbles: np.ndarray, user: str, op: str) -> bool:
        """Revert the user's newest edit in ``scribbles`` (in place); False when there is none to undo."""
        return self._step(scribbles, user, op, undone=False, step=revert_change)

    def redo(self, scribbles: np.ndarray, user: str, op: str) -> bool:
        """Re-apply the user's most recently undone edit in ``scribbles`` (in place); False when there is none."""
        return self._step(scribbles, user, op, undone=True, step=reapply_change)

    def _step(self, scribbles: np.ndarray, user: str, op: str, undone: bool,
              step: Callable[[np.ndarray, Change], int]) -> bool:
        index = self._index()
        mine = [entry for entry in index["entries"] if entry["user"] == user]
        # undo walks back from the newest active edit; redo forward from the oldest undone one after them
        candidates = [entry for entry in (reversed(mine) if not undone else mine) if entry["undone"] == undone]
        if not candidates:
            self._save(index, index["entries"], op, edited=False)
            return False
        entry = candidates[0]
        step(scribbles, self._load_change(entry["seq"]))
        entry["undone"] = not undone
        self._save(index, index["entries"], op)
        return True

    def count(self, user: str) -> tuple[int, int]:
        """(edits the user can undo, edits the user can redo)."""
        mine = [entry for entry in self._index()["entries"] if entry["user"] == user]
        return sum(not entry["undone"] for entry in mine), sum(entry["undone"] for entry in mine)

    def clear(self) -> None:
        """Forget every edit (the image's scribbles were replaced wholesale or the image deleted)."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def annotation_seconds(self) -> float:
        """Time spent editing this image: the pauses before its edits, each up to ``IDLE_AFTER_S``."""
        return float(self._index().get("active_s", 0.0))

    def _save(self, index: dict, entries: list[dict], op: str, edited: bool = True) -> None:
        ops = [*index.get("ops", []), op][-REMEMBERED_OPS:]
        now = time.time()
        last, active = index.get("last_edit"), float(index.get("active_s", 0.0))
        if edited:
            active += 0.0 if last is None else min(max(now - float(last), 0.0), IDLE_AFTER_S)
            last = now
        storage.write_json(self.folder / INDEX_FILE,
                           {"entries": entries, "ops": ops, "active_s": active, "last_edit": last})

    def _change_path(self, seq: int) -> Path:
        return self.folder / f"{seq:08d}.npz"

    def _load_change(self, seq: int) -> Change:
        path = self._change_path(seq)
        try:
            with np.load(path, allow_pickle=False) as archive:
                return Change(archive["rows"], archive["cols"], archive["before"], archive["after"])
        except (OSError, ValueError, KeyError) as error:
            raise InputError(f"a stroke of the history cannot be read ({error})", path) from None
