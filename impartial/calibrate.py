"""Calibrating a trained run on its held-out strokes: instance thresholds, and how good the run is.

A step of its own (like StarDist's ``optimize_thresholds``): the trainer calls it when a run ends, and it can be
re-run on any finished run with any scribbled images, e.g. after more strokes were drawn.

The quality figures need no labels: the balanced accuracy of the foreground threshold on the held-out stroke
pixels, and the stroke consistency of the cells found in the held-out regions (see
:func:`impartial.separation.stroke_consistency`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from .config import CELL_CLASSES, NUCLEUS_CLASSES, RunConfig
from .dataset import TrainingImage
from .instances import choose_threshold, combine_class_probabilities, stained
from .model import UNet
from .predict import load_models, predict_with_models
from .runs import Run
from .scribbles import class_strokes, count_pieces
from .separation import ValidationRegion, choose_seeds
from .stainstrokes import fills_cells

# Share of the cell-stroke pixels that must lie in stain for the instance step to keep cells to the stains. On
# Vectra and the demo 0.99-1.0 (a stroke drawn over a cell's edge still leaves a few pixels outside).
STAINED_STROKES = 0.95


@dataclass
class Calibration:
    """What :func:`calibrate` found.

    Attributes:
        thresholds: instance settings for ``thresholds.json`` (``threshold``, ``nucleus_threshold``,
            ``membrane_fills_cells``, ``cells_show_stain`` and, for runs with cell cores, ``seeds`` and
            ``core_threshold``).
        quality: ``validation_accuracy`` (balanced accuracy of the foreground threshold on held-out stroke pixels)
            and ``stroke_consistency``; None where no held-out strokes allow them.
    """

    thresholds: dict[str, float | str | bool]
    quality: dict[str, float | None]


def calibrate(run: Run, dataset: list[TrainingImage], device: torch.device | None = None,
              models: list[UNet] | None = None) -> Calibration:
    """Choose a run's instance settings on the validation boxes of ``dataset`` and measure its quality there.

    Images without a validation box are left out; with none at all the run's defaults are kept and the quality
    is unknown.
    """
    models = models if models is not None else load_models(run, device or torch.device("cpu"))
    held = [found for item in dataset if (found := _held_out(item, models, run.config)) is not None]
    regions = [region for region, _ in held]
    defaults = dataclasses.asdict(run.config.instances)
    pooled = {"threshold": [(r.cell_prob, r.cell_strokes, r.background_strokes) for r in regions],
              "nucleus_threshold": [(r.nucleus_prob, *strokes) for r, strokes in held if r.nucleus_prob is not None]}
    thresholds: dict[str, float | str | bool] = {
        key: _threshold_over(samples, defaults[key]) for key, samples in pooled.items()}
    thresholds["membrane_fills_cells"] = membrane_fills_cells([item.image for item in dataset], run.config)
    thresholds["cells_show_stain"] = cells_show_stain(dataset, run.config)
    chosen = dataclasses.replace(run.config.instances, **thresholds)
    if regions and all(region.core_prob is not None for region in regions):
        thresholds.update(choose_seeds(regions, chosen))
        chosen = dataclasses.replace(chosen, **thresholds)
    quality = {"validation_accuracy": balanced_accuracy(pooled["threshold"], thresholds["threshold"]),
               "stroke_consistency": (float(np.mean([region.consistency(chosen) for region in regions]))
                                      if any(region.cell_strokes.any() for region in regions) else None)}
    return Calibration(thresholds, quality)


def membrane_fills_cells(images: list[np.ndarray], config: RunConfig) -> bool:
    """Whether the run's membrane channel holds a stain that fills cells (a cytoplasm stain, see
    :func:`impartial.stainstrokes.fills_cells`) on most of the (C, H, W) ``images``; False without a membrane and
    a nuclear channel to compare."""
    membrane, nuclear = config.instances.membrane_channel, config.instances.nuclear_channel
    if membrane is None or nuclear is None or membrane == nuclear or max(membrane, nuclear) >= config.n_channels:
        return False
    votes = [fills_cells(image, membrane, nuclear) for image in images]
    return bool(votes) and sum(votes) > len(votes) / 2


def cells_show_stain(dataset: list[TrainingImage], config: RunConfig) -> bool:
    """Whether at least ``STAINED_STROKES`` of the cell-stroke pixels of ``dataset`` lie where the cells' stains
    show (:func:`impartial.instances.stained`); False without cell strokes.

    The instance step then keeps the foreground to the stained pixels. Where cells are dark in the named channels
    (a transmitted-light image, a channel chosen wrongly) the strokes say so and the step stays as it was.
    """
    inside = total = 0
    for item in dataset:
        cell_strokes, _ = class_strokes(item.scribbles, config, CELL_CLASSES)
        if cell_strokes.any():
            inside += int(np.count_nonzero(stained(item.image, config.instances) & cell_strokes))
            total += int(np.count_nonzero(cell_strokes))
    return total > 0 and inside >= STAINED_STROKES * total


def _held_out(item: TrainingImage, models: list[UNet],
              config: RunConfig) -> tuple[ValidationRegion, tuple[np.ndarray, np.ndarray]] | None:
    """The image's validation region with its predictions and cell strokes, and its nucleus strokes."""
    crop = _bounding_box(item.val_mask)
    if crop is None:
        return None
    image = item.image[(slice(None), *crop)]
    prediction = predict_with_models(models, config, image, passes=1, mc_dropout=False)
    cell, nucleus = combine_class_probabilities(prediction.class_probabilities())
    scribbles = item.scribbles[crop]
    region = ValidationRegion(image, cell, nucleus, prediction.core, *class_strokes(scribbles, config, CELL_CLASSES))
    return region, class_strokes(scribbles, config, NUCLEUS_CLASSES)


def _bounding_box(mask: np.ndarray | None) -> tuple[slice, slice] | None:
    if mask is None or not mask.any():
        return None
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def _threshold_over(samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]], default: float) -> float:
    """One threshold for all validation boxes (their pixels pooled, scores within one standard error of the best
    counted as ties: see :func:`choose_threshold`); the default when a side has no strokes."""
    if not samples or not any(pos.any() for _, pos, _ in samples) or not any(neg.any() for _, _, neg in samples):
        return float(default)
    probability = np.concatenate([p.ravel() for p, _, _ in samples])
    positive = np.concatenate([pos.ravel() for _, pos, _ in samples])
    negative = np.concatenate([neg.ravel() for _, _, neg in samples])
    strokes = (sum(count_pieces(pos) for _, pos, _ in samples), sum(count_pieces(neg) for _, _, neg in samples))
    return float(choose_threshold(probability, positive, negative, strokes=strokes))


def balanced_accuracy(samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]], threshold: float) -> float | None:
    """Mean of the shares of positive stroke pixels at or above ``threshold`` and negative ones below it, pooled
    over (probability, positive, negative) samples; None when a side has no pixels."""
    positives = np.concatenate([p[pos] for p, pos, _ in samples]) if samples else np.zeros(0)
    negatives = np.concatenate([p[neg] for p, _, neg in samples]) if samples else np.zeros(0)
    if not positives.size or not negatives.size:
        return None
    return float((np.mean(positives >= threshold) + np.mean(negatives < threshold)) / 2)
