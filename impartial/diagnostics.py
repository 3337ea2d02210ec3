"""Signs in a prediction that the model has not yet learned to tell cells from background, and where to
scribble next.

The checks read one task's maps, as :mod:`impartial.predict` gives them, and its strokes:

- the background probability is never high (the model is sure of background almost nowhere: it has not yet
  learned the background), or never low (it is sure of a cell almost nowhere);
- the entropy is high over most of the image;
- most pixels of the held-out (validation) cell or background strokes fall on the wrong side of the threshold.

Each finding says what the numbers show in plain words and which strokes to draw next, with a place in the
image (``where``, pixel row and column) when there is one to point at. An empty list means none of these signs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from .config import RunConfig
from .predict import Prediction
from .scribbles import validation_box

SURE = 0.8  # a pixel is surely cell when its foreground probability is at least this, surely background at most 1 - it
MIN_SURE_FRACTION = 0.01  # fewer surely-background (or surely-cell) pixels than this fraction: "almost nowhere"
HIGH_ENTROPY = 0.8  # normalised entropy at or above this is high (one class: probability between about 0.24 and 0.76)
MOST = 0.5  # high entropy over more than this fraction of the image: "most of the image"
MAX_MISSED = 0.5  # more than this fraction of held-out stroke pixels on the wrong side: "misclassified"
MIN_BLOCK = 16  # side of the smallest block searched for the most uncertain place


# no_sure_background: background probability never high; no_sure_cells: never low; uncertain: entropy high over
# most of the image; held_out_cells_missed / held_out_background_missed: held-out strokes read as the other side
FindingKind = Literal["no_sure_background", "no_sure_cells", "uncertain", "held_out_cells_missed",
                      "held_out_background_missed"]


@dataclass(frozen=True)
class Finding:
    """One sign that the model has not learned enough yet.

    Attributes:
        kind: which check found it.
        message: what the numbers show, in plain words.
        suggestion: the strokes to draw next.
        value: the number behind it: the fraction of pixels (or of held-out stroke pixels) concerned, in [0, 1].
        where: (row, column) of a place to scribble, or None.
    """

    kind: FindingKind
    message: str
    suggestion: str
    value: float
    where: tuple[int, int] | None = None


def findings(foreground: np.ndarray, entropy: np.ndarray, cell_strokes: np.ndarray | None = None,
             background_strokes: np.ndarray | None = None, held_out: np.ndarray | None = None,
             threshold: float = 0.5) -> list[Finding]:
    """What one task's prediction shows about how far the model has learned to tell cells from background.

    Args:
        foreground: (H, W) float, probability that a pixel belongs to any foreground class of the task
            (one minus its background probability), in [0, 1].
        entropy: (H, W) float, the task's entropy normalised to [0, 1] (``TaskPrediction.entropy``).
        cell_strokes: (H, W) bool, pixels scribbled as a foreground class of the task; None = no strokes.
        background_strokes: (H, W) bool, pixels scribbled as the task's background; None = no strokes.
        held_out: (H, W) bool, the validation region: only strokes inside it are checked (the model never trained
            on them). None = every stroke is checked.
        threshold: foreground probability from which a pixel counts as cell (the page's cell threshold).

    Returns:
        The findings in the order of the checks above; empty when the prediction shows none of the signs.
    """
    foreground = np.asarray(foreground, np.float32)
    entropy = np.asarray(entropy, np.float32)
    if foreground.ndim != 2 or entropy.shape != foreground.shape:
        raise ValueError(f"foreground {foreground.shape} and entropy {entropy.shape} must be the same (H, W)")
    shape = foreground.shape
    found = []
    sure_background = float(np.mean(foreground <= 1.0 - SURE))
    if sure_background < MIN_SURE_FRACTION:
        found.append(Finding(
            "no_sure_background",
            f"The model has not yet learned the background: its background probability is at least {SURE:.0%} "
            f"on only {sure_background:.1%} of the image.",
            "Draw background strokes in the gaps between cells and over empty tissue.", sure_background))
    sure_cells = float(np.mean(foreground >= SURE))
    if sure_cells < MIN_SURE_FRACTION:
        found.append(Finding(
            "no_sure_cells",
            f"The background probability is never low: the model is at least {SURE:.0%} sure of a cell on only "
            f"{sure_cells:.1%} of the image.",
            "Draw cell strokes inside a few cells, bright and faint ones.", sure_cells))
    uncertain = float(np.mean(entropy >= HIGH_ENTROPY))
    if uncertain > MOST:
        where = most_uncertain_place(entropy)
        found.append(Finding(
            "uncertain",
            f"The model is unsure over most of the image: the entropy is {HIGH_ENTROPY} or more on "
            f"{uncertain:.0%} of it.",
            f"Scribble where the entropy map is brightest, first around {_place(where)}.", uncertain, where))
    for strokes, wrong, kind, seen, draw in (
            (cell_strokes, foreground < threshold, "held_out_cells_missed", "background", "cell"),
            (background_strokes, foreground >= threshold, "held_out_background_missed", "cell",
             "background")):
        if strokes is None:
            continue
        checked = _checked(strokes, held_out, shape)
        if not checked.any():
            continue
        missed = checked & wrong
        fraction = float(missed.sum() / checked.sum())
        if fraction > MAX_MISSED:
            where = _centre(missed)
            found.append(Finding(
                kind,
                f"The model reads {fraction:.0%} of the {'held-out ' if held_out is not None else ''}{draw} "
                f"strokes as {seen}.",
                f"Draw more {draw} strokes on areas like the ones near {_place(where)}"
                + (", outside the validation box so that the model trains on them." if held_out is not None
                   else "."), fraction, where))
    return found


def prediction_findings(prediction: Prediction, config: RunConfig, scribbles: np.ndarray | None = None,
                        val_mask: np.ndarray | None = None, threshold: float = 0.5) -> list[Finding]:
    """:func:`findings` for every task of a run's prediction of one image.

    Args:
        prediction: the run's prediction of the image.
        config: the run's config (its tasks give the scribble layout).
        scribbles: (H, W, S) 0/1 in the method's layout (per task: one map per class, then background), or None.
        val_mask: (H, W) bool validation region the training held out; None = the box training chooses
            (:func:`impartial.scribbles.validation_box` with ``train.val_fraction``).
        threshold: foreground probability from which a pixel counts as cell.

    Returns:
        The findings of all tasks; with several tasks each message starts with the task's name.
    """
    held_out = None
    if scribbles is not None and scribbles.any():
        held_out = val_mask if val_mask is not None else validation_box(scribbles, config.train.val_fraction)
    found, channel = [], 0
    for task_config, task in zip(config.tasks, prediction.tasks, strict=True):
        cells = background = None
        if scribbles is not None:
            cells = scribbles[..., channel:channel + task_config.n_classes].any(axis=-1)
            background = scribbles[..., channel + task_config.n_classes] > 0
        channel += task_config.n_scribble_channels
        for finding in findings(task.class_segmentation.sum(axis=0), task.entropy, cells, background, held_out,
                                threshold):
            if len(config.tasks) > 1:
                finding = Finding(finding.kind, f"{task.name}: {finding.message}", finding.suggestion, finding.value,
                                  finding.where)
            found.append(finding)
    return found


def most_uncertain_place(entropy: np.ndarray) -> tuple[int, int]:
    """(row, column) of the centre of the square block with the highest mean entropy.

    The block side is an eighth of the shorter image side, at least ``MIN_BLOCK`` pixels (the whole image when
    smaller); blocks tile the image from the top left, partial ones at the edges left out.
    """
    side = min(max(MIN_BLOCK, min(entropy.shape) // 8), *entropy.shape)
    rows, cols = entropy.shape[0] // side, entropy.shape[1] // side
    means = entropy[:rows * side, :cols * side].reshape(rows, side, cols, side).mean(axis=(1, 3))
    row, col = np.unravel_index(int(np.argmax(means)), means.shape)
    return int(row * side + side // 2), int(col * side + side // 2)


def _checked(strokes: np.ndarray, held_out: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    strokes = np.asarray(strokes, bool)
    if strokes.shape != shape:
        raise ValueError(f"strokes {strokes.shape} must have the maps' shape {shape}")
    return strokes if held_out is None else strokes & np.asarray(held_out, bool)


def _centre(mask: np.ndarray) -> tuple[int, int]:
    """(row, column) of the pixel of ``mask`` nearest to the mask's centroid (a place on the strokes)."""
    rows, cols = np.nonzero(mask)
    nearest = int(np.argmin((rows - rows.mean()) ** 2 + (cols - cols.mean()) ** 2))
    return int(rows[nearest]), int(cols[nearest])


def _place(where: tuple[int, int]) -> str:
    return f"x {where[1]}, y {where[0]}"
