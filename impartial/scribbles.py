"""Automatic scribbles from ground truth, the validation box, and scribble statistics.

Scribbles use the method's layout (H, W, S) uint8 0/1: for each task in order one map per class,
then one background map; ``scribbles_from_label_image`` / ``label_image_from_scribbles`` convert one task's
maps to and from a label image (0 none, 1 background, k + 1 class k).

Automatic scribbles imitate an annotator working box by box: pick a random cell not yet
scribbled, open a box around it, and draw in that box a thin foreground stroke in every cell it
touches (the cell's skeleton plus a ring a few px inside its border) and a thin background stroke
(the skeleton of a narrow band around the cells), until the requested share of cells is used.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage
from skimage.morphology import skeletonize
from skimage.segmentation import relabel_sequential

from .config import RunConfig
from .errors import InputError

BAND = 4  # px: width of the background band around cells whose skeleton is the background stroke
RING_DEPTH = 3  # px: how far inside a cell's border its ring stroke runs
MARGIN = BAND + 2  # px of context around the cells of a box, so the band is complete inside the box


def _scribble_codes(n_classes: int) -> np.ndarray:
    """Label-image value of each scribble map: classes are 2..n_classes + 1, the background map (last) is 1."""
    return np.array([*range(2, n_classes + 2), 1])


def scribbles_from_label_image(label_image: np.ndarray, n_classes: int) -> np.ndarray:
    """(H, W) scribble label image (0 none, 1 background, k + 1 class k) -> (H, W, n_classes + 1) uint8 maps."""
    return (label_image[..., np.newaxis] == _scribble_codes(n_classes)).astype(np.uint8)


def label_image_from_scribbles(scribbles: np.ndarray) -> np.ndarray:
    """(H, W, n_classes + 1) scribble maps -> (H, W) uint8 label image; a pixel in several maps takes the first."""
    codes = _scribble_codes(scribbles.shape[-1] - 1)
    return np.where(scribbles.any(axis=-1), codes[np.argmax(scribbles, axis=-1)], 0).astype(np.uint8)


def auto_scribbles(class_labels: list[list[np.ndarray]], fraction: float, seed: int = 0, box: int = 32,
                   val_fraction: float = 0.4) -> tuple[np.ndarray, np.ndarray]:
    """Scribble about ``fraction`` of the cells of the reference class from ground-truth instances.

    The reference class is the first class of the first task. Its cells are visited in random
    order; each not yet scribbled opens a ``box`` x ``box`` window around it (see module doc), and
    the reference cells touching the window count as used. It stops once
    ``max(1, round(fraction * n_cells))`` are used, so it may overshoot by one box's cells.

    Args:
        class_labels: ``class_labels[t][c]`` (H, W) integer instance map of class c of task t.
        fraction: share of reference cells to scribble, in (0, 1].
        seed: seeds the order in which cells are visited.
        box: side in px of the window opened around each chosen cell.
        val_fraction: side of the validation box relative to the image side (see :func:`validation_box`).

    Returns:
        (scribbles (H, W, S) uint8 0/1 in the method's layout, val_mask (H, W) bool).
    """
    if not 0 < fraction <= 1:
        raise InputError(f"the scribble fraction must be in (0, 1], got {fraction}")
    if box < 1:
        raise InputError(f"the scribble box must be at least 1 px, got {box}")
    maps = _checked_labels(class_labels)
    bounds = [[_bounding_boxes(labels) for labels in task] for task in maps]
    reference = maps[0][0]
    n_cells = int(reference.max())  # ids are sequential after _checked_labels
    if n_cells == 0:
        raise InputError("the labels hold no cells to scribble")
    scribbles = np.zeros((*reference.shape, sum(len(task) + 1 for task in maps)), np.uint8)
    used = np.zeros(n_cells + 1, bool)
    target = max(1, round(fraction * n_cells))
    for cell in np.random.default_rng(seed).permutation(np.arange(1, n_cells + 1)):
        if used.sum() >= target:
            break
        if used[cell]:
            continue
        window = _window_around(bounds[0][0][cell], box, reference.shape)
        _scribble_window(maps, bounds, window, scribbles)
        used[reference[window]] = True
        used[0] = False  # background inside the window is no cell
    return scribbles, validation_box(scribbles, val_fraction)


def sparse_scribbles(cells: np.ndarray, n_cells: int = 10, n_background: int = 5, length: int = 8,
                     seed: int = 0, val_fraction: float = 0.4) -> tuple[np.ndarray, np.ndarray]:
    """What a person draws in about a minute: short strokes in a few cells and a few short background strokes.

    ``n_cells`` random cells each get a stroke of up to ``length`` px along the middle of their skeleton (after
    the 1 px separation of touching cells). ``n_background`` of them also get a background stroke of up to
    ``2 * length`` px: a piece of the skeleton of the band around the cells, next to the chosen cell.

    Args:
        cells: (H, W) integer whole-cell instances (may be partial: only labelled cells are used).
        n_cells, n_background: how many cell and background strokes.
        length: longest cell stroke in px.
        seed: seeds the choice of cells and stroke pieces.
        val_fraction: see :func:`validation_box`.

    Returns:
        (scribbles (H, W, 2) uint8 [cell, background], val_mask (H, W) bool).
    """
    labels = _checked_labels([[cells]])[0][0]
    if labels.max() == 0:
        raise InputError("the labels hold no cells to scribble")
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(np.arange(1, labels.max() + 1))[:n_cells]
    skeleton = skeletonize((labels > 0) & ~shared_borders(labels))
    band = skeletonize(_background_stroke(labels > 0))
    scribbles = np.zeros((*labels.shape, 2), np.uint8)
    for index, cell in enumerate(chosen):
        own = skeleton & (labels == cell)
        scribbles[..., 0] |= _piece_near(own, _centre(labels == cell), length)
        if index < n_background:
            near = band & (ndimage.distance_transform_edt(labels != cell) <= BAND + 2)
            scribbles[..., 1] |= _piece_near(near, _centre(labels == cell), 2 * length, rng)
    return scribbles, validation_box(scribbles, val_fraction)


def strokes_at(cells: np.ndarray, points: Iterable[tuple[int, int]], length: int = 8) -> np.ndarray:
    """The strokes an annotator draws when asked to scribble at ``points``: one per point.

    A point inside a cell gets up to ``length`` px of that cell's skeleton nearest the point (after the 1 px
    separation of touching cells); a point on background gets up to ``2 * length`` px of the skeleton of the
    background band around the cells nearest the point (or of the whole background when there are no cells).

    Args:
        cells: (H, W) integer whole-cell instances, complete around the points.
        points: (row, col) image pixels.

    Returns:
        (H, W, 2) uint8 [cell, background] strokes.
    """
    labels = _checked_labels([[cells]])[0][0]
    skeleton = skeletonize((labels > 0) & ~shared_borders(labels))
    band = skeletonize(_background_stroke(labels > 0)) if labels.any() else skeletonize(labels == 0)
    scribbles = np.zeros((*labels.shape, 2), np.uint8)
    for row, col in points:
        cell = labels[row, col]
        curve, channel, piece = (skeleton & (labels == cell), 0, length) if cell else (band, 1, 2 * length)
        scribbles[..., channel] |= _piece_near(curve, np.array([row, col], float), piece)
    return scribbles


def _centre(mask: np.ndarray) -> np.ndarray:
    return np.argwhere(mask).mean(axis=0)


def _piece_near(curve: np.ndarray, centre: np.ndarray, length: int,
                rng: np.random.Generator | None = None) -> np.ndarray:
    """(H, W) bool: up to ``length`` px of ``curve`` around one of its pixels (the one nearest ``centre``, or a
    random one when ``rng`` is given), following the curve's 8-connected pixels outward."""
    points = np.argwhere(curve)
    piece = np.zeros(curve.shape, bool)
    if len(points) == 0:
        return piece
    start = points[rng.integers(len(points))] if rng is not None else points[
        np.argmin(((points - centre) ** 2).sum(axis=1))]
    # pixels of the curve reachable from the start within ``length`` / 2 steps each way
    steps = np.full(curve.shape, np.inf)
    steps[tuple(start)] = 0
    frontier = [tuple(start)]
    for step in range(1, length // 2 + 1):
        grown = []
        for row, col in frontier:
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    r, c = row + dr, col + dc
                    if 0 <= r < curve.shape[0] and 0 <= c < curve.shape[1] and curve[r, c] and steps[r, c] > step:
                        steps[r, c] = step
                        grown.append((r, c))
        frontier = grown
    piece[np.isfinite(steps)] = True
    return piece


def validation_box(scribbles: np.ndarray, fraction: float = 0.4) -> np.ndarray:
    """The held-out validation region: an axis-aligned box where the scribbles are densest.

    Args:
        scribbles: (H, W, S) scribble maps.
        fraction: box side relative to the image side, in (0, 1); the box is
            ``round(fraction * H)`` x ``round(fraction * W)`` px (at least 1).

    Returns:
        (H, W) bool, True inside the box. Among equally dense positions the top-left-most wins.
    """
    if scribbles.ndim != 3:
        raise InputError(f"scribbles must be (H, W, S), got shape {scribbles.shape}")
    if not 0 < fraction < 1:
        raise InputError(f"the validation fraction must be in (0, 1), got {fraction}")
    height, width = scribbles.shape[:2]
    box_h, box_w = max(1, round(fraction * height)), max(1, round(fraction * width))
    scribbled = scribbles.any(axis=2).astype(np.int64)
    integral = np.pad(scribbled.cumsum(axis=0).cumsum(axis=1), ((1, 0), (1, 0)))
    # Scribbled pixels in the box whose top-left corner is (r, c), for every r, c at once.
    counts = (integral[box_h:, box_w:] - integral[:-box_h, box_w:]
              - integral[box_h:, :-box_w] + integral[:-box_h, :-box_w])
    top, left = np.unravel_index(np.argmax(counts), counts.shape)
    mask = np.zeros((height, width), bool)
    mask[top:top + box_h, left:left + box_w] = True
    return mask


def scribble_table(name: str, scribbles: np.ndarray, class_labels: list[list[np.ndarray]],
                   config: RunConfig) -> list[dict]:
    """Rows of the method's scribble table for one image, one row per class.

    Columns: ``input_file``, ``task``, ``class``, ``labelled_cells`` (instances in the labels),
    ``scribbled_cells`` (instances with at least one pixel of their class's stroke) and
    ``scribbled_pixels_pct`` (% of the class's pixels covered by its strokes).
    """
    _check_layout(scribbles, config)
    maps = _checked_labels(class_labels)
    if [len(task) for task in maps] != [task.n_classes for task in config.tasks]:
        raise InputError("the labels do not match the tasks' classes", name)
    if maps[0][0].shape != scribbles.shape[:2]:
        raise InputError(f"labels are {maps[0][0].shape}, scribbles {scribbles.shape[:2]}", name)
    rows = []
    for task_index, class_index, class_name, channel in _class_channels(config):
        labels = maps[task_index][class_index]
        stroked = scribbles[..., channel] > 0
        covered = np.count_nonzero(stroked & (labels > 0)) / max(np.count_nonzero(labels), 1)
        rows.append({
            "input_file": name,
            "task": config.tasks[task_index].name,
            "class": class_name,
            "labelled_cells": int(labels.max()),
            "scribbled_cells": int(np.count_nonzero(np.unique(labels[stroked]))),
            "scribbled_pixels_pct": round(100.0 * float(covered), 3),
        })
    return rows


def scribble_counts(scribbles: np.ndarray, config: RunConfig) -> dict[str, int]:
    """Scribbled pixels per class name, and under ``background`` the pixels in any task's background map."""
    _check_layout(scribbles, config)
    counts = {name: int(np.count_nonzero(scribbles[..., channel])) for _, _, name, channel in _class_channels(config)}
    counts["background"] = int(np.count_nonzero(scribbles[..., _background_channels(config)].any(axis=-1)))
    return counts


def stroke_counts(scribbles: np.ndarray, config: RunConfig) -> dict[str, int]:
    """Separate strokes (8-connected pieces) per class name, and under ``background`` those of the background maps
    (all tasks' together)."""
    _check_layout(scribbles, config)
    counts = {name: count_pieces(scribbles[..., channel] > 0) for _, _, name, channel in _class_channels(config)}
    counts["background"] = count_pieces(scribbles[..., _background_channels(config)].any(axis=-1))
    return counts


def count_pieces(mask: np.ndarray, block: int = 8) -> int:
    """Number of 8-connected pieces of a sparse (H, W) bool mask, without labelling the whole image.

    Pieces are found on a ``block`` times coarser copy first (a piece never spans two coarse pieces), then
    counted at full resolution inside each coarse piece only: on a 4000 x 4000 image with a few strokes
    this takes milliseconds where labelling every pixel takes a fifth of a second.
    """
    connectivity = np.ones((3, 3), bool)
    height, width = mask.shape
    padded = np.zeros((-(-height // block) * block, -(-width // block) * block), bool)
    padded[:height, :width] = mask
    coarse = padded.reshape(padded.shape[0] // block, block, padded.shape[1] // block, block).any(axis=(1, 3))
    coarse_labels, _ = ndimage.label(coarse, connectivity)
    total = 0
    for index, box in enumerate(ndimage.find_objects(coarse_labels), start=1):
        inside = np.repeat(np.repeat(coarse_labels[box] == index, block, axis=0), block, axis=1)
        full = tuple(slice(part.start * block, part.stop * block) for part in box)
        total += ndimage.label(padded[full] & inside, connectivity)[1]
    return total


def class_strokes(scribbles: np.ndarray, config: RunConfig, classes: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) bool strokes of ``classes`` and the background strokes of the tasks holding them.

    Positive: the union of the scribbles of every class named in ``classes``. Negative: the background scribbles
    of the tasks with such a class, except where a positive stroke lies.

    Args:
        scribbles: (H, W, S) 0/1 in the method's layout (per task: classes, then background).
        config: the run's tasks.
        classes: class names, e.g. ``impartial.config.CELL_CLASSES``.
    """
    _check_layout(scribbles, config)
    positive = np.zeros(scribbles.shape[:2], bool)
    negative = np.zeros(scribbles.shape[:2], bool)
    background = _background_channels(config)
    for task_index, _, name, channel in _class_channels(config):
        if name in classes:
            positive |= scribbles[..., channel] > 0
            negative |= scribbles[..., background[task_index]] > 0
    return positive, negative & ~positive


Side = Literal["classes", "background"]


@dataclass(frozen=True)
class MissingSides:
    """A task whose strokes lack one side, or both: its classes and its background.

    The scribble loss of a task compares its class strokes with its background strokes; with one side
    only, the easiest answer (everything is a cell, or nothing is) fits the strokes and the network learns
    nothing useful about that task.
    """

    task: str
    classes: tuple[str, ...]  # the task's class names
    missing: tuple[Side, ...]  # ("classes",), ("background",) or ("classes", "background")

    def message(self, several_tasks: bool = False) -> str:
        """One line naming what is missing and what to add; ``several_tasks`` puts the task's name first."""
        names = " or ".join(self.classes)
        if self.missing == ("background",):
            line = (f"Only {names} strokes, no background: add background strokes (between and around the cells) "
                    f"so the network can tell {names} from background.")
        elif self.missing == ("classes",):
            line = (f"Only background strokes, no {names}: add {names} strokes (inside the cells) so the network "
                    f"can tell {names} from background.")
        else:
            line = f"No strokes: add {names} strokes and background strokes."
        return f"Task {self.task}: {line}" if several_tasks else line


def missing_sides(scribbles: Iterable[np.ndarray], config: RunConfig) -> list[MissingSides]:
    """Tasks whose strokes, over all ``scribbles`` together, lack their classes, their background, or both.

    A task counts its classes as present when any of its classes has a stroke (a multi-class task may leave
    one class out). Tasks with both sides are not listed, so an empty list means every task can learn.

    Args:
        scribbles: (H, W, S) 0/1 maps in the method's layout, one per image (shapes may differ).
        config: the tasks that give the layout.

    Returns:
        One entry per task lacking a side, in task order.
    """
    has_class = np.zeros(len(config.tasks), bool)
    has_background = np.zeros(len(config.tasks), bool)
    background = _background_channels(config)
    for image in scribbles:
        image = np.asarray(image)
        _check_layout(image, config)
        stroked = image.reshape(-1, image.shape[-1]).any(axis=0)  # (S,): which maps hold a stroke
        for task_index, _, _, channel in _class_channels(config):
            has_class[task_index] |= stroked[channel]
        has_background |= stroked[background]
    result = []
    for task_index, task in enumerate(config.tasks):
        missing = tuple(side for side, present in (("classes", has_class[task_index]),
                                                   ("background", has_background[task_index])) if not present)
        if missing:
            result.append(MissingSides(task.name, tuple(task.classes), missing))
    return result


# --- layout ---------------------------------------------------------------------------------------

def class_channel_pairs(config: RunConfig, class_name: str) -> list[tuple[int, int]]:
    """(scribble channel of ``class_name``, that task's background channel) for every task with that class."""
    background = _background_channels(config)
    return [(channel, background[task_index]) for task_index, _, name, channel in _class_channels(config)
            if name == class_name]


def _class_channels(config: RunConfig) -> list[tuple[int, int, str, int]]:
    """(task index, class index, class name, scribble channel) of every foreground class."""
    result, channel = [], 0
    for task_index, task in enumerate(config.tasks):
        result += [(task_index, index, name, channel + index) for index, name in enumerate(task.classes)]
        channel += task.n_scribble_channels
    return result


def _background_channels(config: RunConfig) -> list[int]:
    """Scribble channel of each task's background map (the last of the task's maps)."""
    return list(np.cumsum([task.n_scribble_channels for task in config.tasks]) - 1)


def _check_layout(scribbles: np.ndarray, config: RunConfig) -> None:
    if scribbles.ndim != 3 or scribbles.shape[-1] != config.n_scribble_channels:
        raise InputError(f"scribbles have shape {scribbles.shape}, expected (H, W, {config.n_scribble_channels}) "
                         "(per task one map per class, then background)")


def _checked_labels(class_labels: list[list[np.ndarray]]) -> list[list[np.ndarray]]:
    """Validate ``class_labels[t][c]`` (same-shape 2-D integer maps) and renumber each map from 1 sequentially."""
    if not class_labels or any(not task for task in class_labels):
        raise InputError("class labels need at least one task with at least one class")
    arrays = [np.asarray(labels) for task in class_labels for labels in task]
    shape = arrays[0].shape
    for labels in arrays:
        if labels.ndim != 2 or labels.shape != shape:
            raise InputError(f"every label map must be 2-D with shape {shape}, got {labels.shape}")
        if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
            raise InputError(f"label maps must hold non-negative integer ids, got {labels.dtype}")
    renumbered = iter(relabel_sequential(labels)[0].astype(np.int32) for labels in arrays)
    return [[next(renumbered) for _ in task] for task in class_labels]


# --- strokes --------------------------------------------------------------------------------------

def _bounding_boxes(labels: np.ndarray) -> np.ndarray:
    """(n + 1, 4) int64 (top, left, bottom, right) per id of a sequential label map; row 0 is unused."""
    found = ndimage.find_objects(labels)
    boxes = [(0, 0, 0, 0)] + [(rows.start, cols.start, rows.stop, cols.stop) for rows, cols in found]
    return np.array(boxes, np.int64)


def _window_around(bounds: np.ndarray, box: int, shape: tuple[int, int]) -> tuple[slice, slice]:
    """A ``box`` x ``box`` window centred on a cell's bounding box, shifted to lie inside the image."""
    window = []
    for start, stop, size in ((bounds[0], bounds[2], shape[0]), (bounds[1], bounds[3], shape[1])):
        low = int(np.clip((start + stop) // 2 - box // 2, 0, max(size - box, 0)))
        window.append(slice(low, min(low + box, size)))
    return window[0], window[1]


def _scribble_window(maps: list[list[np.ndarray]], bounds: list[list[np.ndarray]], window: tuple[slice, slice],
                     scribbles: np.ndarray) -> None:
    """Draw, in place, the strokes of every task for one window."""
    channel = 0
    for task_maps, task_bounds in zip(maps, bounds, strict=True):
        touched = [_ids(labels[window]) for labels in task_maps]
        crop = _crop_around(window, [b[ids] for b, ids in zip(task_bounds, touched, strict=True)],
                            scribbles.shape[:2])
        target = scribbles[crop]  # a view: writing to it writes the scribbles
        for index, (labels, ids) in enumerate(zip(task_maps, touched, strict=True)):
            target[..., channel + index] |= _cell_strokes(labels[crop], ids)
        cells = np.any([labels[crop] > 0 for labels in task_maps], axis=0)
        # Background strokes only inside the window; the crop's context just completes the band.
        window_in_crop = tuple(slice(w.start - c.start, w.stop - c.start) for w, c in zip(window, crop, strict=True))
        target[window_in_crop + (channel + len(task_maps),)] |= _background_stroke(cells)[window_in_crop]
        channel += len(task_maps) + 1


def _ids(labels: np.ndarray) -> np.ndarray:
    """Sorted cell ids (non-zero values) present in ``labels``."""
    ids = np.unique(labels)
    return ids[ids > 0]


def _crop_around(window: tuple[slice, slice], cell_bounds: list[np.ndarray],
                 shape: tuple[int, int]) -> tuple[slice, slice]:
    """The window grown to hold the touched cells' bounding boxes (rows of (top, left, bottom, right)) plus MARGIN."""
    bounds = np.concatenate([np.array([[window[0].start, window[1].start, window[0].stop, window[1].stop]]),
                             *cell_bounds])
    top, left = np.maximum(bounds[:, :2].min(axis=0) - MARGIN, 0)
    bottom, right = np.minimum(bounds[:, 2:].max(axis=0) + MARGIN, shape)
    return slice(int(top), int(bottom)), slice(int(left), int(right))


def _cell_strokes(labels: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """(h, w) uint8 strokes inside the cells ``ids`` of ``labels``: skeleton plus a ring RING_DEPTH px inside.

    Cells are first eroded by 1 px where they touch another cell, so neighbours' strokes stay apart.
    """
    if ids.size == 0:
        return np.zeros(labels.shape, np.uint8)
    separated = np.isin(labels, ids) & ~shared_borders(labels)
    # Padding makes the image edge a border too, so the ring also closes along a cut-off cell's edge.
    deep = ndimage.distance_transform_edt(np.pad(separated, 1))[1:-1, 1:-1] >= RING_DEPTH
    ring = deep & ~ndimage.binary_erosion(deep)
    return (skeletonize(separated) | ring).astype(np.uint8)


def shared_borders(labels: np.ndarray) -> np.ndarray:
    """(h, w) bool: pixels of a cell with a different cell among their 8 neighbours (not background)."""
    largest = ndimage.maximum_filter(labels, size=3, mode="nearest")
    smallest = ndimage.minimum_filter(np.where(labels > 0, labels, np.iinfo(labels.dtype).max), size=3,
                                      mode="nearest")
    return (labels > 0) & ((largest != labels) | (smallest != labels))


def _background_stroke(cells: np.ndarray) -> np.ndarray:
    """(h, w) bool skeleton of the BAND px wide background band around ``cells`` (bool); never on a cell."""
    if not cells.any():
        return np.zeros(cells.shape, bool)
    band = ~cells & (ndimage.distance_transform_edt(~cells) <= BAND)
    return skeletonize(band)
