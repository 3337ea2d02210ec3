"""Telling touching cells apart: cell-core targets from scribbles, and a label-free score of cells against strokes.

Touching cells share no background gap for the foreground probability to show, so the network gets a second
output, the *cell core*: a cell's interior away from its border. Cores of neighbouring cells are several pixels
apart even where the cells touch, so they seed one watershed basin per cell. The scribbles teach it without extra
drawing: a cell stroke lies inside a cell (core), and a background stroke marks the pixels within ``core_margin``
of it as "not a core" (a cell's border). Background strokes that run between two cell strokes are the thin gaps of
touching cells, the pixels that matter most: they count as much as all other background together.

Held-out strokes also judge an instance result without labels (:func:`stroke_consistency`): each cell stroke should
lie in exactly one cell, no cell should hold two strokes, and background strokes should stay outside the cells.
:func:`choose_seeds` picks a run's seeds (cores and their threshold, or nuclei) by that score.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .config import CELL_CLASSES, InstanceConfig, RunConfig
from .errors import InputError
from .instances import instances_from_probabilities
from .scribbles import class_strokes

# A stroke counts as inside one cell when at least this share of its pixels lies in that cell.
STROKE_SHARE = 0.8
# Two cell strokes this close (px) on either side of a background stroke mark it as the gap of touching cells.
GAP_REACH = 6
CORE_CANDIDATES = np.round(np.arange(0.1, 0.95, 0.1), 2)
_NEUTRAL_THRESHOLD = 0.5


def cell_and_background_strokes(scribbles: np.ndarray, config: RunConfig) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) bool strokes on cells (every class that is part of a whole cell, ``CELL_CLASSES``) and on their
    tasks' background; see :func:`impartial.scribbles.class_strokes`."""
    return class_strokes(scribbles, config, CELL_CLASSES)


def core_targets(scribbles: np.ndarray, config: RunConfig) -> np.ndarray:
    """(H, W, 3) uint8 training targets of the cell-core output: core, not core, and the gaps of touching cells.

    Core: every cell stroke. Not core: background strokes and the pixels within ``config.train.core_margin`` of
    them (the border of a cell next to background), except where a cell stroke lies. Gap: the same margin around
    the background-stroke pixels that lie between two different cell strokes, each within ``GAP_REACH`` px: the
    thin line where touching cells meet. It is scored as a side of its own (see losses.separation_loss), so a few
    gap pixels weigh as much as all the other background.
    """
    cells, background = cell_and_background_strokes(scribbles, config)
    margin = config.train.core_margin
    gaps = _gaps(cells, background)
    not_core, gap = (_near(mask, margin) & ~cells for mask in (background, gaps))
    return np.stack([cells, not_core, gap], axis=-1).astype(np.uint8)


def gap_strokes(scribbles: np.ndarray, config: RunConfig) -> np.ndarray:
    """(H, W) bool: the background-stroke pixels that lie between two different cell strokes (each within
    ``GAP_REACH`` px), the thin gaps of touching cells."""
    return _gaps(*cell_and_background_strokes(scribbles, config))


def _gaps(cell_strokes: np.ndarray, background_strokes: np.ndarray) -> np.ndarray:
    return background_strokes & _between_two_strokes(cell_strokes)


def _near(mask: np.ndarray, distance: float) -> np.ndarray:
    """(H, W) bool: pixels within ``distance`` of ``mask`` (none when the mask is empty)."""
    if not mask.any():
        return mask.copy()
    return ndimage.distance_transform_edt(~mask) <= distance


def _between_two_strokes(cell_strokes: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels with two different cell strokes (8-connected pieces) within ``GAP_REACH`` px."""
    strokes, n_strokes = ndimage.label(cell_strokes, structure=np.ones((3, 3), bool))
    if n_strokes < 2:
        return np.zeros(cell_strokes.shape, bool)
    size = 2 * GAP_REACH + 1
    largest = ndimage.maximum_filter(strokes, size=size)
    smallest = ndimage.minimum_filter(np.where(strokes > 0, strokes, n_strokes + 1), size=size)
    return (largest > 0) & (smallest <= n_strokes) & (largest != smallest)


def stroke_consistency(cells: np.ndarray, cell_strokes: np.ndarray, background_strokes: np.ndarray) -> float:
    """How well instances agree with strokes, in [0, 1], without labels.

    Strokes are the 8-connected pieces of ``cell_strokes``. A stroke is consistent when at least
    ``STROKE_SHARE`` of its pixels lie in one cell and no other stroke has the same cell. The score is the mean of
    the share of consistent strokes and the share of background-stroke pixels outside every cell; a side without
    strokes is left out (1.0 when there are no strokes at all).

    Args:
        cells: (H, W) int instance labels, 0 = background.
        cell_strokes: (H, W) bool strokes drawn inside cells.
        background_strokes: (H, W) bool strokes drawn on background.
    """
    if not cells.shape == cell_strokes.shape == background_strokes.shape:
        raise InputError(f"cells {cells.shape} and strokes {cell_strokes.shape}, {background_strokes.shape} "
                         "differ in shape")
    sides = []
    strokes, n_strokes = ndimage.label(cell_strokes, structure=np.ones((3, 3), bool))
    if n_strokes:
        sides.append(_consistent_strokes(cells, strokes, n_strokes) / n_strokes)
    if background_strokes.any():
        sides.append(float(np.mean(cells[background_strokes] == 0)))
    return float(np.mean(sides)) if sides else 1.0


def _consistent_strokes(cells: np.ndarray, strokes: np.ndarray, n_strokes: int) -> int:
    """Number of strokes lying (by ``STROKE_SHARE``) in one cell that no other stroke claims."""
    on_stroke = strokes > 0
    pairs, counts = np.unique(np.stack([strokes[on_stroke], cells[on_stroke]]), axis=1, return_counts=True)
    stroke_ids, cell_ids = pairs
    sizes = np.bincount(strokes[on_stroke], minlength=n_strokes + 1)
    inside_one = (cell_ids > 0) & (counts >= STROKE_SHARE * sizes[stroke_ids])
    owned_cells = cell_ids[inside_one]  # at most one cell per stroke, since the share exceeds one half
    claims = np.bincount(owned_cells, minlength=int(cells.max()) + 1)
    return int(np.count_nonzero(claims[owned_cells] == 1))


@dataclass
class ValidationRegion:
    """Predictions over one held-out region with its strokes: what :func:`choose_seeds` scores.

    Attributes:
        image: (C, H, W) normalised image of the region.
        cell_prob: (H, W) float cell probability; nucleus_prob and core_prob (H, W) or None (no such output).
        cell_strokes, background_strokes: (H, W) bool held-out strokes.
    """

    image: np.ndarray
    cell_prob: np.ndarray
    nucleus_prob: np.ndarray | None
    core_prob: np.ndarray | None
    cell_strokes: np.ndarray
    background_strokes: np.ndarray

    def consistency(self, config: InstanceConfig) -> float:
        """:func:`stroke_consistency` of the cells that ``config`` finds in this region."""
        cells, _ = instances_from_probabilities(self.cell_prob, self.nucleus_prob, self.image, config,
                                                core_prob=self.core_prob)
        return stroke_consistency(cells, self.cell_strokes, self.background_strokes)


def choose_seeds(regions: list[ValidationRegion], config: InstanceConfig,
                 candidates: np.ndarray = CORE_CANDIDATES) -> dict[str, str | float]:
    """The seeds whose cells agree best with held-out strokes (mean :func:`stroke_consistency`).

    Tried in order of preference (the first of equals wins): cell cores at each candidate threshold, nearest to
    0.5 first, then nuclei (see InstanceConfig.seeds).

    Args:
        regions: the validation regions, each with its predictions and strokes.
        config: the other instance settings (the foreground threshold already chosen).
        candidates: core thresholds to try.

    Returns:
        ``{"seeds": ..., "core_threshold": ...}``; the config's own values when no region holds a cell stroke.
    """
    if not any(region.cell_strokes.any() for region in regions):
        return {"seeds": config.seeds, "core_threshold": float(config.core_threshold)}
    by_preference = sorted(candidates, key=lambda value: abs(value - _NEUTRAL_THRESHOLD))
    trials = [{"seeds": "core", "core_threshold": float(value)} for value in by_preference]
    trials.append({"seeds": "nuclei", "core_threshold": float(config.core_threshold)})
    scores = [np.mean([region.consistency(dataclasses.replace(config, **trial)) for region in regions])
              for trial in trials]
    return trials[int(np.argmax(scores))]
