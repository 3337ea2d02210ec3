"""From class probabilities to cell (and nucleus) instances.

Two methods, chosen by ``InstanceConfig.method``:

- ``threshold``: the method's own step. Threshold the cell probability, take connected components, drop objects
  below ``min_size`` pixels, grow the labels by ``grow`` pixels. Touching cells without a visible gap merge.
- ``watershed`` (default): the same foreground, split by a seeded watershed. Seeds are the predicted cell cores when
  the run has them (see impartial.separation), else predicted nuclei when the run has a nucleus class, else blobs
  of the nuclear channel, else peaks of the distance to the background. With nuclei as seeds, a part of the
  foreground far from every nucleus is seeded too: a cell whose nucleus lies outside the section. The landscape
  rises gently with the distance to the nearest seed (``InstanceConfig.compactness``), so where the probability
  shows no border between two cells the split falls about halfway between their seeds. Every foreground region
  without a seed still becomes a cell, so nothing the network found is lost.
  A run whose cell strokes lie in stain keeps its cells to the stained pixels (``cells_show_stain``), which trims
  the foreground the network spills into the dark gaps around cells: first pixels below a level of the whole
  image's stain, then each cell's pixels much dimmer than the cell itself.

All label images are (H, W) int32 with 0 = background and ids 1..n.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_li
from skimage.measure import label
from skimage.morphology import disk, h_maxima
from skimage.segmentation import expand_labels, relabel_sequential, watershed

from .config import CELL_CLASSES, NUCLEUS_CLASSES, InstanceConfig
from .errors import InputError

Item = TypeVar("Item")
Found = TypeVar("Found")

# Images with a side above WINDOW + 2 * WINDOW_MARGIN go through the instance step in windows of WINDOW pixels,
# each with WINDOW_MARGIN pixels of context (more than a cell is wide), so its memory stays bounded.
WINDOW = 2048
WINDOW_MARGIN = 128
# Windows found at once on a large image, each needing about 80 bytes per pixel (0.4 GB for a 2048 px window and
# its margins): the bound keeps a many-core server's peak near 2 GB.
MAX_WINDOW_THREADS = 4
# Smoothing (pixels) of the image channels used for seeds and the watershed landscape: removes pixel noise only.
_CHANNEL_SIGMA = 1.0
# A distance-transform peak seeds its own cell only if it rises this many pixels above the saddle to its neighbour.
_PEAK_HEIGHT = 1.0
# Touching nuclei split where their (smoothed) distance transform has a saddle this many pixels below the peaks.
# Shallow: an under-split nucleus merges two cells, while an over-split one costs little because the watershed
# gives both halves' cell the same borders. On saved Vectra predictions 0.25 px scored F1 0.607 against 0.556 at
# 1 px (the same from 0.05 to 0.25); the demo's round nuclei are the same at any value.
_NUCLEUS_NECK = 0.25
# A foreground peak this far (px) from every nucleus seed seeds a cell of its own: a cell whose nucleus lies outside
# the section (a quarter of the cells of a Vectra tissue section). Nuclei are about this radius.
_NUCLEUS_REACH = 6.0
# The cells without a nucleus are seeded from the distance transform of the probability above this level: the
# probability dips (without reaching the foreground threshold) where touching cells meet, so the level opens gaps.
_INNER_LEVEL = 0.5
# With ``InstanceConfig.cells_show_stain`` a pixel can be a cell's only where the nuclear or the membrane channel
# rises above this share of its Li level: the network's foreground spills into the dark gaps around cells on
# unseen tissue (twelve saved Vectra predictions: F1 0.537 -> 0.566; 0.5 to 0.8 give 0.558-0.572, the demo unchanged
# up to 0.7). Below the level itself, which costs the demo's dim cells (0.065 F1).
_STAIN_GATE = 0.6
# With ``cells_show_stain`` a cell also loses its pixels whose stain (nuclear plus membrane channel, each over its
# 99th percentile) is below this share of the cell's mean stain, unless the cell encloses them: what the network
# spills into the dim gap around a cell is dimmer than the cell itself. Saved Vectra predictions: F1 on image0
# 0.566 -> 0.607 (10 of 12 runs better, one 0.003 worse), recall on image1 0.176 -> 0.207, the demo 0.971 ->
# 0.966; shares 0.5 / 0.65 / 0.7 gave 0.590 / 0.608 / 0.603 on image0 and the demo 0.971 / 0.961 / 0.959; a
# share of the cell's 90th percentile instead of its mean did as well at a sort's cost.
_OWN_STAIN_SHARE = 0.6
# The Li level is found on every ``_STAIN_STRIDE``-th row and column: the same level within a few per cent, in a
# ninth of the time (0.12 s instead of 0.67 s per channel of 2048 x 2048).
_STAIN_STRIDE = 3
# The threshold choice prefers values near the middle when several separate the scribbles equally well.
_NEUTRAL_THRESHOLD = 0.5
DEFAULT_CANDIDATES = np.round(np.arange(0.05, 0.96, 0.05), 2)


def instances_from_probabilities(cell_prob: np.ndarray, nucleus_prob: np.ndarray | None, image: np.ndarray | None,
                                 config: InstanceConfig, window: int = WINDOW, margin: int = WINDOW_MARGIN,
                                 core_prob: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Cells and nuclei with the method in ``config.method`` ('watershed' or 'threshold').

    An image larger than one ``window`` plus its margins is processed window by window (see
    :func:`_instances_by_window`), which bounds the memory: the watershed needs about 80 bytes per pixel, and at most
    ``MAX_WINDOW_THREADS`` windows are found at once.

    Args:
        cell_prob: (H, W) float probability of being inside a cell.
        nucleus_prob: (H, W) float probability of being inside a nucleus, or None.
        image: (C, H, W) normalised image (channels for seeds and landscape), or None.
        config: thresholds, channels, ``min_size`` and ``grow``.
        window: side of the windows a large image is cut into.
        margin: context (pixels) each window sees around itself; more than a cell's diameter.
        core_prob: (H, W) float cell-core probability (the watershed's seeds and relief), or None.

    Returns:
        cells (H, W) int32, and nuclei (H, W) int32 labelled with the id of their cell (None when unknown).
    """
    _check_map(cell_prob, "cell probability")
    _check_inputs(cell_prob.shape, nucleus_prob, image, config, core_prob)
    if max(cell_prob.shape) > window + 2 * margin:
        return _instances_by_window(cell_prob, nucleus_prob, image, config, window, margin, core_prob)
    return _instances_in_one_piece(cell_prob, nucleus_prob, image, config, core_prob)


def _instances_in_one_piece(cell_prob: np.ndarray, nucleus_prob: np.ndarray | None, image: np.ndarray | None,
                            config: InstanceConfig,
                            core_prob: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    if config.method == "watershed":
        return watershed_instances(cell_prob, nucleus_prob, image, config, core_prob)
    if config.method == "threshold":
        cells = threshold_instances(cell_prob, config.threshold, config.min_size, config.grow)
        nuclei = None if nucleus_prob is None else _nuclei_in_cells(nucleus_prob > config.nucleus_threshold, cells)
        return cells, nuclei
    raise InputError(f"unknown instance method '{config.method}' (choose 'watershed' or 'threshold')")


def _instances_by_window(cell_prob: np.ndarray, nucleus_prob: np.ndarray | None, image: np.ndarray | None,
                         config: InstanceConfig, window: int, margin: int,
                         core_prob: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """The instance step window by window, each seeing ``margin`` pixels of context around it.

    A window keeps the objects whose first pixel (in raster order) lies inside it, so each cell is taken
    whole from the one window that owns it; windows agree with the whole-image result except where a
    cell is wider than the margin or where per-window statistics (the threshold of the nuclear
    channel, the membrane's range) differ from the whole image's.
    """
    height, width = cell_prob.shape
    corners = [(top, left) for top in range(0, height, window) for left in range(0, width, window)]

    def context(top: int, left: int) -> tuple[slice, slice]:
        return (slice(max(top - margin, 0), min(top + window + margin, height)),
                slice(max(left - margin, 0), min(left + window + margin, width)))

    def found(corner: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
        outer = context(*corner)
        return _instances_in_one_piece(
            cell_prob[outer], None if nucleus_prob is None else nucleus_prob[outer],
            None if image is None else image[(slice(None), *outer)], config,
            None if core_prob is None else core_prob[outer])

    cells = np.zeros((height, width), np.int32)
    nuclei: np.ndarray | None = None
    n_cells = 0
    for (top, left), (piece_cells, piece_nuclei) in zip(corners, _in_order(found, corners), strict=True):
        outer = context(top, left)
        owned = _owned_ids(piece_cells, top - outer[0].start, left - outer[1].start, window)
        new_ids = np.zeros(int(piece_cells.max()) + 1, np.int32)
        new_ids[owned] = np.arange(n_cells + 1, n_cells + 1 + len(owned), dtype=np.int32)
        n_cells += len(owned)
        relabelled = new_ids[piece_cells]
        written = relabelled > 0
        cells[outer][written] = relabelled[written]
        if piece_nuclei is not None:
            nuclei = np.zeros_like(cells) if nuclei is None else nuclei
            nuclei[outer][written] = np.where(piece_nuclei > 0, relabelled, 0)[written]
    # a cell of one window may cover another's entirely where they overlap: close the gaps in the ids
    present = np.zeros(n_cells + 1, bool)
    present[cells] = True  # no np.unique: it would sort a copy of the whole image
    present[0] = False
    consecutive = np.where(present, np.cumsum(present), 0).astype(np.int32)
    return consecutive[cells], None if nuclei is None else consecutive[nuclei]


def _in_order(work: Callable[[Item], Found], items: list[Item]) -> Iterator[Found]:
    """``work(item)`` for each item, yielded in order, on one thread per core this process may use (at most
    ``MAX_WINDOW_THREADS``: scipy's and skimage's filters and floods release the GIL); at most twice as many
    results as threads are held before they are taken, so memory does not grow with the number of items."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = max(1, min(usable, MAX_WINDOW_THREADS, len(items)))
    with ThreadPoolExecutor(max_workers=threads) as pool:
        pending: collections.deque[Future[Found]] = collections.deque()
        for item in items:
            pending.append(pool.submit(work, item))
            if len(pending) == 2 * threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _owned_ids(labels: np.ndarray, top: int, left: int, window: int) -> np.ndarray:
    """Ids of ``labels`` whose first pixel in raster order lies in the window at (top, left)."""
    ids, first = np.unique(labels.ravel(), return_index=True)
    rows, cols = np.divmod(first, labels.shape[1])
    inside = (ids > 0) & (rows >= top) & (rows < top + window) & (cols >= left) & (cols < left + window)
    return ids[inside]


def threshold_instances(cell_prob: np.ndarray, threshold: float, min_size: int = 5, grow: int = 1) -> np.ndarray:
    """The method's step: (H, W) probability -> components of ``prob > threshold`` -> drop small -> grow.

    Returns (H, W) int32 labels. Growth uses ``expand_labels``, so touching labels never trade pixels.
    """
    _check_map(cell_prob, "cell probability")
    components = label(cell_prob > threshold, connectivity=1)
    return _finish_labels(components, min_size, grow)


def watershed_instances(cell_prob: np.ndarray, nucleus_prob: np.ndarray | None, image: np.ndarray | None,
                        config: InstanceConfig,
                        core_prob: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Seeded watershed of the cell foreground; separates touching cells that share no gap.

    Args:
        cell_prob: (H, W) float cell probability; foreground is ``cell_prob > config.threshold``.
        nucleus_prob: (H, W) float nucleus probability or None. Its components above ``config.nucleus_threshold``
            are the seeds and also count as foreground (a nucleus without cytoplasm is a small cell of its own).
        image: (C, H, W) normalised image or None: ``config.nuclear_channel`` gives seeds when there is no nucleus
            probability, ``config.membrane_channel`` raises the landscape along membranes.
        config: thresholds, channels, ``min_size`` and ``grow``; with ``cells_show_stain`` (and an image) the cell
            probability counts only where :func:`stained`, and each cell drops its pixels much dimmer than itself.
        core_prob: (H, W) float cell-core probability or None. When given and ``config.seeds`` is ``"core"``, its
            components above ``config.core_threshold`` inside the foreground are the seeds and the watershed floods
            ``1 - core_prob``: the cores of touching cells are apart even where the cells share no gap.

    Returns:
        cells (H, W) int32; nuclei (H, W) int32 = the nucleus pixels inside each cell, labelled with the cell's id,
        or None when no nuclei are known (seeds from cores without a nucleus class, or from distance peaks).
    """
    _check_map(cell_prob, "cell probability")
    _check_inputs(cell_prob.shape, nucleus_prob, image, config, core_prob)
    stains = _smoothed_stains(image, config)  # smoothed once for the seeds, the relief, the gate and the trim
    if not (config.cells_show_stain and stains):
        return _flooded_cells(cell_prob, nucleus_prob, stains, config, core_prob)
    cell_prob = np.where(_stained(stains, cell_prob.shape), cell_prob, 0).astype(np.float32)
    cells, nuclei = _flooded_cells(cell_prob, nucleus_prob, stains, config, core_prob)
    return _kept_to_own_stain(cells, nuclei, stains, config.min_size)


def _flooded_cells(cell_prob: np.ndarray, nucleus_prob: np.ndarray | None, stains: dict[int, np.ndarray],
                   config: InstanceConfig,
                   core_prob: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """The seeded watershed of :func:`watershed_instances`, on the cell probability its stain gate left;
    ``stains``: the smoothed channels (:func:`_smoothed_stains`)."""
    foreground = cell_prob > config.threshold
    if core_prob is not None and config.seeds == "core":
        return _core_seeded_instances(foreground, core_prob, nucleus_prob, config)
    nuclei, seeds_are_nuclei = _seeds(foreground, nucleus_prob, stains.get(config.nuclear_channel), config)
    if nucleus_prob is not None:
        foreground |= nuclei > 0
    seeds = _with_cells_without_nucleus(nuclei, cell_prob, foreground) if seeds_are_nuclei else nuclei
    relief = _landscape(cell_prob, stains.get(config.membrane_channel), config.membrane_fills_cells)
    if config.compactness > 0 and seeds.any():
        # a gentle slope up from every seed: where the probability shows no border, cells meet about halfway
        # (skimage's compact watershed does much the same at five times the cost)
        relief = relief + np.float32(config.compactness) * ndi.distance_transform_edt(seeds == 0).astype(np.float32)
    flooded = watershed(relief, markers=seeds, mask=foreground)
    cells = _finish_labels(_with_unseeded_regions(flooded, foreground), config.min_size, config.grow)
    return cells, _nuclei_in_cells(nuclei > 0, cells) if seeds_are_nuclei else None


def _core_seeded_instances(foreground: np.ndarray, core_prob: np.ndarray, nucleus_prob: np.ndarray | None,
                           config: InstanceConfig) -> tuple[np.ndarray, np.ndarray | None]:
    """Cells grown from the cell cores over ``1 - core_prob`` within the foreground (see watershed_instances)."""
    seeds = _finish_labels(label(foreground & (core_prob > config.core_threshold), connectivity=1),
                           config.min_size, grow=0)
    flooded = watershed(1.0 - core_prob.astype(np.float32), markers=seeds, mask=foreground)
    cells = _finish_labels(_with_unseeded_regions(flooded, foreground), config.min_size, config.grow)
    nuclei = None if nucleus_prob is None else _nuclei_in_cells(nucleus_prob > config.nucleus_threshold, cells)
    return cells, nuclei


def _with_unseeded_regions(flooded: np.ndarray, foreground: np.ndarray) -> np.ndarray:
    """Foreground regions that hold no seed are left at 0 by the watershed: each becomes a cell of its own."""
    unseeded = label(foreground & (flooded == 0), connectivity=1)
    return np.where(unseeded > 0, unseeded + flooded.max(), flooded)


def combine_class_probabilities(class_probs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
    """Whole-cell and nucleus probabilities from the per-class maps of a prediction.

    ``cell`` is taken as is; otherwise the parts of a cell (cytoplasm, nuclei in and out of cytoplasm) are summed
    and clipped to 1, which turns the 3-class Vectra setting into whole cells. ``nucleus`` is taken as is, else
    the sum of the nucleus parts, else there is none. A run with nuclei only segments the nuclei as its objects.

    Args:
        class_probs: class name -> (H, W) float probability.

    Returns:
        cell_prob (H, W) float32 and nucleus_prob (H, W) float32 or None.
    """
    nucleus = _class_sum(class_probs, NUCLEUS_CLASSES)
    cell = _class_sum(class_probs, CELL_CLASSES)
    if cell is None:
        cell = nucleus
    if cell is None:
        raise InputError(f"no class describes cells or nuclei (got {', '.join(class_probs) or 'none'}); "
                         f"name a class one of {', '.join(CELL_CLASSES + NUCLEUS_CLASSES[:1])}")
    return cell, nucleus


def choose_threshold(probability: np.ndarray, positive: np.ndarray, negative: np.ndarray,
                     candidates: np.ndarray = DEFAULT_CANDIDATES, strokes: tuple[int, int] | None = None) -> float:
    """The threshold that best separates positive from negative scribbles.

    Pixels count as foreground when ``probability > threshold`` (as in the instance step). The score is the
    balanced accuracy, (true positive rate + true negative rate) / 2, so a long background scribble does not
    outweigh a short cell scribble; ties go to the candidate closest to 0.5.

    With ``strokes`` (how many strokes the positive and negative pixels come from), a candidate whose score is
    within one standard error of the best counts as a tie. A stroke's pixels rise and fall together, so the
    error is that of rates measured on that many strokes: ``sqrt(tpr (1 - tpr) / n_pos + tnr (1 - tnr) / n_neg) / 2``
    at the candidate. A few held-out strokes otherwise pull the threshold to 0.95 for one background pixel
    more below it, where the cells shrink apart.

    Args:
        probability: float array of any shape (e.g. (H, W)).
        positive, negative: bool arrays of the same shape marking the scribbled pixels of each side.
        candidates: thresholds to try.
        strokes: (positive, negative) stroke counts, each at least 1; None: exact ties only.

    Returns:
        The chosen threshold.
    """
    if probability.shape != positive.shape or probability.shape != negative.shape:
        raise InputError(f"probability {probability.shape} and scribbles {positive.shape}, {negative.shape} "
                         "differ in shape")
    if not positive.any() or not negative.any():
        raise InputError("choosing a threshold needs both positive and negative scribbles")
    candidates = np.asarray(candidates, float)
    positive_values = np.sort(probability[positive].ravel())
    negative_values = np.sort(probability[negative].ravel())
    # Fraction of values <= t for every candidate t, from one sort each.
    positives_below = np.searchsorted(positive_values, candidates, side="right") / positive_values.size
    negatives_below = np.searchsorted(negative_values, candidates, side="right") / negative_values.size
    positive_rate, negative_rate = 1.0 - positives_below, negatives_below
    balanced_accuracy = (positive_rate + negative_rate) / 2
    tolerance = 0.0 if strokes is None else np.sqrt(positive_rate * (1 - positive_rate) / max(strokes[0], 1)
                                                    + negative_rate * (1 - negative_rate) / max(strokes[1], 1)) / 2
    best = np.isclose(balanced_accuracy, balanced_accuracy.max()) | (
        balanced_accuracy >= balanced_accuracy.max() - tolerance)
    distances = np.where(best, np.abs(candidates - _NEUTRAL_THRESHOLD), np.inf)
    return float(candidates[np.argmin(distances)])


# --- helpers ----------------------------------------------------------------------------------------------------

def _class_sum(class_probs: dict[str, np.ndarray], names: tuple[str, ...]) -> np.ndarray | None:
    """names[0] if present, else the clipped sum of the other names present, else None."""
    if names[0] in class_probs:
        return np.asarray(class_probs[names[0]], np.float32)
    parts = [class_probs[name] for name in names[1:] if name in class_probs]
    if not parts:
        return None
    return np.clip(np.sum(parts, axis=0), 0.0, 1.0).astype(np.float32)


def _seeds(foreground: np.ndarray, nucleus_prob: np.ndarray | None, nuclear: np.ndarray | None,
           config: InstanceConfig) -> tuple[np.ndarray, bool]:
    """(H, W) int32 seed labels, and whether they are nuclei (not distance peaks); ``nuclear``: the smoothed
    nuclear channel or None."""
    if nucleus_prob is not None:
        blobs = nucleus_prob > config.nucleus_threshold
    elif nuclear is not None:
        blobs = _bright_inside(nuclear, foreground)
        return _finish_labels(_split_touching(blobs), config.min_size, grow=0), True
    else:
        return label(h_maxima(ndi.distance_transform_edt(foreground), _PEAK_HEIGHT), connectivity=2), False
    return _finish_labels(label(blobs, connectivity=1), config.min_size, grow=0), True


def _with_cells_without_nucleus(nuclei: np.ndarray, cell_prob: np.ndarray, foreground: np.ndarray) -> np.ndarray:
    """The nucleus seeds plus one seed per foreground peak farther than ``_NUCLEUS_REACH`` px from every nucleus.

    A peak is the highest point within that reach (per axis) of the lightly smoothed distance to the pixels below
    ``_INNER_LEVEL`` cell probability, and more than ``2 * _PEAK_HEIGHT`` px deep. Returns (H, W) int32 labels: the
    nuclei keep their ids, the new seeds follow them.
    """
    inner = ndi.gaussian_filter(ndi.distance_transform_edt(cell_prob > _INNER_LEVEL), 1.0)
    # more than the reach from every nucleus pixel; a dilation, not a distance transform: the same, 2.5x faster
    far_from_nuclei = ~ndi.binary_dilation(nuclei > 0, disk(_NUCLEUS_REACH))
    deep_enough = inner > 2 * _PEAK_HEIGHT  # not a sliver between cells
    # a maximum filter, not h-maxima: ten times faster on large images, and one seed per reach is what is wanted
    highest = inner >= ndi.maximum_filter(inner, size=2 * int(_NUCLEUS_REACH) + 1)
    peaks = label(highest & far_from_nuclei & deep_enough & foreground, connectivity=2)
    return np.where(peaks > 0, peaks + nuclei.max(), nuclei).astype(np.int32)


def _split_touching(blobs: np.ndarray) -> np.ndarray:
    """(H, W) int32 labels of ``blobs`` (bool), touching round blobs (nuclei) split at their necks.

    Each blob is flooded from the peaks of its (lightly smoothed) distance transform that rise ``_NUCLEUS_NECK``
    above their surroundings, so two nuclei joined by a bridge narrower than either become two seeds.
    """
    distance = ndi.gaussian_filter(ndi.distance_transform_edt(blobs).astype(np.float32), 1.0)
    # The smoothed distance is exactly 0 a few px from every blob (the Gaussian's truncation), so each group of
    # nearby blobs it joins is independent of the others: handled group by group in its own crop, the result is
    # the same as over the whole image. skimage's h-maxima sorts every pixel it is given, so on Vectra tissue at
    # 2048 x 2048 (852 groups) this is three times faster; nuclei crowded into a few large groups gain nothing.
    groups, _ = ndi.label(distance > 0)
    boxes = ndi.find_objects(groups)
    owns = [groups[box] == index for index, box in enumerate(boxes, start=1)]  # each group's pixels in its crop
    peaks = np.zeros(blobs.shape, bool)
    for box, own in zip(boxes, owns, strict=True):
        # ringed by zeros, as in the whole image, even where the image's edge cuts the group (other groups in
        # the crop are apart from it by zeros as well, so they change none of its peaks)
        found = h_maxima(np.pad(distance[box], 1), _NUCLEUS_NECK)[1:-1, 1:-1].astype(bool)
        peaks[box] |= found & blobs[box] & own
    markers = label(peaks, connectivity=2)  # numbered over the whole image, as one h-maxima would
    split = np.zeros(blobs.shape, markers.dtype)
    for box, own in zip(boxes, owns, strict=True):
        flooded = watershed(-distance[box], markers=np.where(own, markers[box], 0), mask=blobs[box] & own)
        split[box] = np.where(own, flooded, split[box])
    return split


def _bright_inside(channel: np.ndarray, foreground: np.ndarray) -> np.ndarray:
    """(H, W) bool: foreground pixels above Li's threshold of the channel's foreground values.

    Li's minimum cross-entropy level, not Otsu's: where small bright nuclei (lymphocytes) and large dim ones
    (epithelium) share a section, Otsu's level falls between the two kinds and the dim nuclei seed no cell
    (Vectra, saved predictions: F1 0.515 with Otsu, 0.556 with Li; with the shallower neck split 0.607).
    """
    values = channel[foreground]
    if values.size == 0 or values.min() == values.max():
        return np.zeros_like(foreground)
    return foreground & (channel > threshold_li(values))


def _landscape(cell_prob: np.ndarray, membrane: np.ndarray | None, fills_cells: bool = False) -> np.ndarray:
    """(H, W) float32 relief that the watershed floods: low inside cells, high at borders and membranes
    (``membrane``: the smoothed membrane channel or None).

    With ``fills_cells`` the channel is a cytoplasm stain, bright inside cells and dark where they meet, so it
    enters upside down: taken as a membrane, it drew the borders through the cytoplasm (F1 0.015 lower on
    seven saved Vectra predictions, up to 0.034).
    """
    outside = 1.0 - cell_prob.astype(np.float32)
    if membrane is None:
        return outside
    span = membrane.max() - membrane.min()
    membrane = (membrane - membrane.min()) / span if span > 0 else np.zeros_like(membrane)
    return (outside + (1.0 - membrane if fills_cells else membrane)) / 2


def _smoothed(channel: np.ndarray) -> np.ndarray:
    return ndi.gaussian_filter(channel.astype(np.float32), _CHANNEL_SIGMA)


def _finish_labels(labels: np.ndarray, min_size: int, grow: int) -> np.ndarray:
    """Drop objects below ``min_size`` pixels, renumber 1..n, grow by ``grow`` pixels; (H, W) int32."""
    areas = np.bincount(labels.ravel())
    kept = np.where(areas[labels] >= min_size, labels, 0)
    kept = relabel_sequential(kept)[0]
    if grow > 0:
        kept = expand_labels(kept, distance=grow)
    return kept.astype(np.int32)


def _kept_to_own_stain(cells: np.ndarray, nuclei: np.ndarray | None, stains: dict[int, np.ndarray],
                       min_size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Each cell less its pixels whose stain is below ``_OWN_STAIN_SHARE`` of the cell's mean stain, unless
    the cell encloses them; cells left below ``min_size`` are dropped, ids renumbered 1..n (nuclei follow).

    The stain is the sum of the smoothed ``stains`` (:func:`_smoothed_stains`), each over its 99th percentile.
    """
    stain = _stain_sum(stains, cells.shape)
    flat = cells.ravel()
    mean_stain = np.bincount(flat, stain.ravel()) / np.maximum(np.bincount(flat), 1)
    inside = cells > 0
    kept = inside & (stain >= _OWN_STAIN_SHARE * mean_stain[cells])
    kept |= _enclosed(inside & ~kept, ~inside)
    trimmed = _largest_pieces(np.where(kept, cells, 0))
    trimmed[np.bincount(trimmed.ravel())[trimmed] < min_size] = 0
    renumbered, new_ids, _ = relabel_sequential(trimmed)
    if nuclei is not None:
        nuclei = new_ids[np.where(renumbered > 0, nuclei, 0)].astype(np.int32)
    return renumbered.astype(np.int32), nuclei


def _stain_sum(stains: dict[int, np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """(H, W) float32: the smoothed stains, each divided by its 99th percentile (taken on every
    ``_STAIN_STRIDE``-th row and column), summed."""
    total = np.zeros(shape, np.float32)
    for smoothed in stains.values():
        top = np.percentile(smoothed[::_STAIN_STRIDE, ::_STAIN_STRIDE], 99)
        if top > 0:
            total += smoothed / np.float32(top)
    return total


def _largest_pieces(cells: np.ndarray) -> np.ndarray:
    """(H, W) labels: each cell's largest 4-connected piece (a trim can cut a cell in two; a cell is one region)."""
    pieces = label(cells, connectivity=1)  # regions of one id that touch
    if pieces.max() == np.count_nonzero(np.bincount(cells.ravel())[1:]):  # as many pieces as cells
        return cells
    owner = np.zeros(pieces.max() + 1, cells.dtype)
    owner[pieces.ravel()] = cells.ravel()
    by_cell_then_area = np.lexsort((np.bincount(pieces.ravel())[1:], owner[1:])) + 1
    cell_of = owner[by_cell_then_area]
    last_of_cell = np.append(cell_of[1:] != cell_of[:-1], True)
    largest = np.zeros(cells.max() + 1, pieces.dtype)
    largest[cell_of[last_of_cell]] = by_cell_then_area[last_of_cell]
    return np.where(largest[cells] == pieces, cells, 0)


def _enclosed(candidates: np.ndarray, outside: np.ndarray) -> np.ndarray:
    """(H, W) bool: the ``candidates`` pixels that cannot reach ``outside`` through candidates (holes)."""
    regions, _ = ndi.label(candidates | outside)
    reaching = np.unique(regions[outside])
    return candidates & ~np.isin(regions, reaching)


def _nuclei_in_cells(nucleus_mask: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """(H, W) int32: nucleus pixels inside a cell, labelled with that cell's id."""
    return np.where(nucleus_mask & (cells > 0), cells, 0).astype(np.int32)


def stained(image: np.ndarray, config: InstanceConfig) -> np.ndarray:
    """(H, W) bool: where the (C, H, W) ``image``'s nuclear or membrane channel (lightly smoothed) is above
    ``_STAIN_GATE`` times its Li level; everywhere when the image has neither channel the config names.

    Li's level, as for the nuclear seeds: it sits low enough to keep dim cells beside bright ones.
    """
    return _stained(_smoothed_stains(image, config), image.shape[1:])


def _stained(stains: dict[int, np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """:func:`stained` from the smoothed stains (:func:`_smoothed_stains`); everywhere when there are none."""
    if not stains:
        return np.ones(shape, bool)
    shown = np.zeros(shape, bool)
    for smoothed in stains.values():
        sample = smoothed[::_STAIN_STRIDE, ::_STAIN_STRIDE]
        if sample.min() < sample.max():
            shown |= smoothed > _STAIN_GATE * threshold_li(sample)
    return shown


def _smoothed_stains(image: np.ndarray | None, config: InstanceConfig) -> dict[int, np.ndarray]:
    """The nuclear and membrane channels the config names that the (C, H, W) image has, smoothed, by channel
    (in channel order); none without an image."""
    if image is None:
        return {}
    channels = sorted({channel for channel in (config.nuclear_channel, config.membrane_channel)
                       if channel is not None and channel < image.shape[0]})
    return {channel: _smoothed(image[channel]) for channel in channels}


def _check_map(probability: np.ndarray, name: str) -> None:
    if probability.ndim != 2:
        raise InputError(f"{name} must be 2-D (H, W), got shape {probability.shape}")


def _check_inputs(shape: tuple[int, ...], nucleus_prob: np.ndarray | None, image: np.ndarray | None,
                  config: InstanceConfig, core_prob: np.ndarray | None = None) -> None:
    for name, other in (("nucleus", nucleus_prob), ("core", core_prob)):
        if other is not None and other.shape != shape:
            raise InputError(f"{name} probability {other.shape} and cell probability {shape} differ in shape")
    if image is None:
        return
    if image.ndim != 3 or image.shape[1:] != shape:
        raise InputError(f"image {image.shape} must be (C, {shape[0]}, {shape[1]}) to match the probabilities")
    for name in ("membrane_channel", "nuclear_channel"):
        channel = getattr(config, name)
        if channel is not None and not 0 <= channel < image.shape[0]:
            raise InputError(f"instances.{name} = {channel} but the image has {image.shape[0]} channel(s)")
