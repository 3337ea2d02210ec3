"""Where to scribble next: regions ranked by how much a stroke there is expected to teach the network.

Three signals, each in [0, 1] per pixel, averaged over square regions of about a cell or two:

- **uncertainty**: the normalised entropy of the predicted classes (the network cannot tell them apart);
- **disagreement**: the standard deviation of the cell probability over MC-dropout passes and checkpoints, scaled
  so that 0.5 (the most two probabilities can disagree by) counts as 1;
- **unsure splits**: cells the instance step found much larger than the typical cell (likely several merged),
  over their whole area.

Regions are picked greedily, best first, at least ``spacing`` apart, so the suggestions spread over the image
instead of crowding one uncertain patch; regions already holding strokes, or marked done or skipped, are left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .errors import InputError

MERGED_AREA_FACTOR = 2.0  # a cell this many times the median area is probably several cells
WEIGHTS = {"uncertainty": 1.0, "disagreement": 1.0, "unsure split": 0.5}


@dataclass(frozen=True)
class Suggestion:
    """A square region to scribble in: ``top``, ``left`` and ``size`` in image pixels, its ``score`` and the
    signal that contributed most (``reason``)."""

    top: int
    left: int
    size: int
    score: float
    reason: str

    @property
    def key(self) -> str:
        """Names the region in the project's done / skipped record."""
        return f"{self.top},{self.left},{self.size}"


def gain_maps(entropy: np.ndarray, cell_variance: np.ndarray | None, cells: np.ndarray | None) -> dict[str, np.ndarray]:
    """The per-pixel signals (see the module docstring), each (H, W) float32 in [0, 1].

    Args:
        entropy: (H, W) normalised entropy of the prediction.
        cell_variance: (H, W) variance of the cell probability over passes, or None.
        cells: (H, W) instances found, or None.
    """
    maps = {"uncertainty": np.clip(entropy, 0.0, 1.0).astype(np.float32)}
    if cell_variance is not None:
        maps["disagreement"] = np.clip(np.sqrt(np.maximum(cell_variance, 0.0)) / 0.5, 0.0, 1.0).astype(np.float32)
    if cells is not None and cells.max() > 0:
        areas = np.bincount(cells.ravel())
        areas[0] = 0
        typical = np.median(areas[areas > 0])
        maps["unsure split"] = (areas >= MERGED_AREA_FACTOR * typical)[cells].astype(np.float32)
    return maps


def suggest_regions(maps: dict[str, np.ndarray], scribbles: np.ndarray, count: int = 5, size: int = 32,
                    spacing: int | None = None, skip: frozenset[str] = frozenset()) -> list[Suggestion]:
    """The ``count`` best regions of side ``size``, at least ``spacing`` (default ``2 * size``) apart.

    Args:
        maps: from :func:`gain_maps`.
        scribbles: (H, W, S) the image's strokes: regions holding any are left out.
        skip: :attr:`Suggestion.key` of regions marked done or skipped.
    """
    shape = scribbles.shape[:2]
    if any(values.shape != shape for values in maps.values()):
        raise InputError(f"the signals {[v.shape for v in maps.values()]} and scribbles {shape} differ in size")
    spacing = 2 * size if spacing is None else spacing
    means = {name: _region_means(values, size) for name, values in maps.items()}
    total = sum(WEIGHTS[name] * values for name, values in means.items())
    scribbled = _region_means(scribbles.any(axis=-1).astype(np.float32), size) > 0.5 / size ** 2  # >= 1 pixel
    order = np.argsort(total, axis=None)[::-1]
    step = max(1, size // 2)
    picked: list[Suggestion] = []
    for flat in order:
        if len(picked) == count:
            break
        row, col = np.unravel_index(flat, total.shape)
        top, left = int(row * step), int(col * step)
        suggestion = Suggestion(top, left, size, float(total[row, col]),
                                max(means, key=lambda name: WEIGHTS[name] * means[name][row, col]))
        if scribbled[row, col] or suggestion.key in skip or not total[row, col] > 1e-6:
            continue
        if all(max(abs(top - other.top), abs(left - other.left)) >= spacing for other in picked):
            picked.append(suggestion)
    return picked


def _region_means(values: np.ndarray, size: int) -> np.ndarray:
    """Means over ``size`` x ``size`` regions placed every ``size // 2`` pixels, inside the image."""
    step = max(1, size // 2)
    height, width = values.shape
    if height < size or width < size:
        return np.zeros((0, 0), np.float32)
    box = ndimage.uniform_filter(values.astype(np.float32), size=size, mode="constant")
    centres = np.arange(size // 2, height - (size - 1 - size // 2), step), \
        np.arange(size // 2, width - (size - 1 - size // 2), step)
    return box[np.ix_(*centres)]
