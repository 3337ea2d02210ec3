"""Tiled prediction with MC dropout over the checkpoint ensemble.

For every tile, each checkpoint runs ``mcdrop`` dropout passes in one batch; the passes give the
per-class mean probability (``class_segmentation``) and its variance
(``class_segmentation_variance``). Tiles overlap and are blended with separable ramps whose
per-axis sums are one, so no full-size weight image is needed and memory stays bounded by the
outputs themselves.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .config import RunConfig
from .device import autocast, compute_dtype, pick_device
from .errors import InputError
from .losses import class_probabilities, split_outputs
from .model import UNet, build_model, enable_mc_dropout
from .runs import Run, load_weights

_CPU_TURN = threading.Lock()

FLIPS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))  # none, left-right, up-down, both (C, H, W)


@dataclass
class TaskPrediction:
    """One task's output over the whole image.

    Attributes:
        class_segmentation: (n_classes, H, W) float32, mean probability of each foreground class.
        class_segmentation_variance: (n_classes, H, W) float32, its variance over dropout passes and checkpoints.
        entropy: (H, W) float32, entropy of the mean class distribution (background included), divided by
            log(n_classes + 1) so it lies in [0, 1]: 1 = the model cannot tell the classes apart.
    """

    name: str
    class_names: list[str]
    class_segmentation: np.ndarray
    class_segmentation_variance: np.ndarray
    entropy: np.ndarray


@dataclass
class Prediction:
    """Predictions of every task of a run for one image.

    Attributes:
        tasks: one :class:`TaskPrediction` per task.
        core: (H, W) float32 mean cell-core probability (runs with ``separation``), else None.
        core_variance: (H, W) float32 its variance over dropout passes, flips and checkpoints, else None.
    """

    tasks: list[TaskPrediction]
    core: np.ndarray | None = None
    core_variance: np.ndarray | None = None

    def class_probabilities(self) -> dict[str, np.ndarray]:
        """Mean probability map (H, W) of every foreground class, by class name."""
        return {name: task.class_segmentation[index]
                for task in self.tasks for index, name in enumerate(task.class_names)}

    def class_variances(self) -> dict[str, np.ndarray]:
        """Variance map (H, W) of every foreground class, by class name."""
        return {name: task.class_segmentation_variance[index]
                for task in self.tasks for index, name in enumerate(task.class_names)}

    def entropy(self) -> np.ndarray:
        """(H, W) uncertainty shown to the annotator: the largest task entropy at each pixel."""
        return np.max(np.stack([task.entropy for task in self.tasks]), axis=0)

    def arrays(self) -> dict[str, np.ndarray | list[str]]:
        """All tasks stacked (and the core maps when present), as export.save_prediction_npz expects."""
        arrays = {
            "class_segmentation": np.concatenate([task.class_segmentation for task in self.tasks]),
            "class_segmentation_variance": np.concatenate([task.class_segmentation_variance for task in self.tasks]),
            "entropy": np.stack([task.entropy for task in self.tasks]),
            "class_names": [name for task in self.tasks for name in task.class_names],
            "task_names": [task.name for task in self.tasks],
        }
        if self.core is not None:
            arrays.update(core_probability=self.core, core_variance=self.core_variance)
        return arrays


def load_models(run: Run, device: torch.device) -> list[UNet]:
    """The run's checkpoint ensemble on ``device`` (weights loaded with ``weights_only=True``)."""
    models = []
    for path in run.require_checkpoints():
        model = build_model(run.config)
        model.load_state_dict(load_weights(path, device))
        models.append(model.to(device))
    return models


def predict_image(run: Run, image: np.ndarray, mcdrop: int | None = None,
                  device: torch.device | None = None) -> Prediction:
    """Predict a normalised (C, H, W) image with the run's ensemble and MC dropout.

    Args:
        run: a run with at least one checkpoint.
        image: (C, H, W) float32, normalised as for training.
        mcdrop: dropout passes per checkpoint; defaults to ``run.config.predict.mcdrop``.
        device: defaults to CUDA when present.
    """
    device = device or pick_device(run.config.train.device)
    passes = run.config.predict.mcdrop if mcdrop is None else mcdrop
    models = load_models(run, device)
    # Predictions on the CPU take turns: each already uses every core, so several at once (dashboard sessions
    # of a lab server) would all finish later than one after another.
    with _CPU_TURN if device.type == "cpu" else contextlib.nullcontext():
        return predict_with_models(models, run.config, image, passes, mc_dropout=True)


def predict_with_models(models: Sequence[UNet], config: RunConfig, image: np.ndarray, passes: int,
                        mc_dropout: bool = True) -> Prediction:
    """Tiled prediction of ``image`` (C, H, W) with the given models (all on one device).

    With ``mc_dropout`` False the models run in eval mode once each (the trainer's preview).
    """
    _check_image(image, config)
    channels, height, width = image.shape
    multiple = 2 ** config.model.depth
    tile_y = _tile_size(height, config.predict.tile, config.predict.overlap, multiple)
    tile_x = _tile_size(width, config.predict.tile, config.predict.overlap, multiple)
    padded = _pad_to(image, tile_y, tile_x)
    out_h, out_w = padded.shape[1:]
    grid_y = _tile_weights(out_h, tile_y, config.predict.overlap)
    grid_x = _tile_weights(out_w, tile_x, config.predict.overlap)

    # one map per foreground class of each task, then the cell core as a one-map "task" of its own
    n_maps = [task.n_classes for task in config.tasks] + [1] * int(config.separation)
    means = [np.zeros((n, out_h, out_w), np.float32) for n in n_maps]
    variances = [np.zeros((n, out_h, out_w), np.float32) for n in n_maps]
    device = next(models[0].parameters()).device
    for model in models:
        if mc_dropout:
            enable_mc_dropout(model)
        else:
            model.eval()
    passes = passes if mc_dropout else 1
    dtype = compute_dtype(config.train.precision, device)

    with torch.inference_mode():
        for y0, weight_y in grid_y:
            for x0, weight_x in grid_x:
                tile = torch.from_numpy(np.ascontiguousarray(padded[:, y0:y0 + tile_y, x0:x0 + tile_x])).to(device)
                weight = np.outer(weight_y, weight_x)[None]
                for index, (mean, variance) in enumerate(_tile_statistics(models, config, tile, passes, dtype)):
                    means[index][:, y0:y0 + tile_y, x0:x0 + tile_x] += weight * mean
                    variances[index][:, y0:y0 + tile_y, x0:x0 + tile_x] += weight * variance

    means = [np.ascontiguousarray(mean[:, :height, :width]) for mean in means]
    variances = [np.ascontiguousarray(variance[:, :height, :width]) for variance in variances]
    tasks = [TaskPrediction(task.name, list(task.classes), mean, variance, normalised_entropy(mean))
             for task, mean, variance in zip(config.tasks, means, variances, strict=False)]
    if not config.separation:
        return Prediction(tasks)
    return Prediction(tasks, core=means[-1][0], core_variance=variances[-1][0])


def _tile_statistics(models: Sequence[UNet], config: RunConfig, tile: torch.Tensor, passes: int,
                     dtype: torch.dtype) -> list[tuple[np.ndarray, np.ndarray]]:
    """Mean and variance over all passes of all models (convolutions in ``dtype``) of each task's foreground class
    probabilities, then of the cell-core probability when the run has it.

    With ``predict.flips``, pass ``i`` sees the tile flipped by ``FLIPS[i % 4]`` (and its output flipped back):
    test-time flips at no extra cost, whose spread adds to the dropout variance.
    """
    per_task: list[list[torch.Tensor]] = [[] for _ in range(len(config.tasks) + int(config.separation))]
    # passes go through the network predict.batch at a time: that bounds the activations' memory
    chunks = [min(config.predict.batch, passes - start) for start in range(0, passes, config.predict.batch)]
    done = 0
    for model in models:
        for chunk in chunks:
            flips = [FLIPS[(done + offset) % len(FLIPS) if config.predict.flips else 0] for offset in range(chunk)]
            batch = torch.stack([tile.flip(axes) if axes else tile for axes in flips])
            with autocast(tile.device, dtype):
                output = model(batch).float()
            output = torch.stack([out.flip(axes) if axes else out for out, axes in zip(output, flips, strict=True)])
            done += chunk
            for index, (task, task_output) in enumerate(zip(config.tasks, split_outputs(output, config.tasks),
                                                            strict=True)):
                probs = class_probabilities(torch.softmax(task_output.logits, dim=1), task.ncomponents)
                per_task[index].append(probs[:, :task.n_classes])
            if config.separation:
                per_task[-1].append(torch.sigmoid(output[:, config.n_task_outputs:config.n_task_outputs + 1]))
    statistics = []
    for samples in per_task:
        stacked = torch.cat(samples)  # (passes * models, n_classes, h, w)
        mean = stacked.mean(dim=0)
        variance = ((stacked - mean) ** 2).mean(dim=0)
        statistics.append((mean.float().cpu().numpy(), variance.float().cpu().numpy()))
    return statistics


def normalised_entropy(foreground: np.ndarray, rows_per_block: int = 512) -> np.ndarray:
    """Entropy of (foreground classes..., background) per pixel, scaled to [0, 1].

    Args:
        foreground: (n_classes, H, W) mean probabilities; background is 1 minus their sum.
        rows_per_block: rows computed at a time, so temporaries stay small on huge images.
    """
    entropy = np.empty(foreground.shape[1:], np.float32)
    largest = np.float32(np.log(foreground.shape[0] + 1))  # the entropy of a uniform distribution
    for top in range(0, foreground.shape[1], rows_per_block):
        block = foreground[:, top:top + rows_per_block]
        background = np.clip(1.0 - block.sum(axis=0), 0.0, 1.0)
        total = np.zeros(block.shape[1:], np.float32)
        for probability in (*block, background):
            p = np.clip(probability, 1e-12, 1.0)
            total -= p * np.log(p)
        entropy[top:top + rows_per_block] = total / largest  # scaled per block: no second full-size array
    return entropy


def _check_image(image: np.ndarray, config: RunConfig) -> None:
    if image.ndim != 3 or image.shape[0] != config.n_channels:
        raise InputError(f"image has shape {image.shape}; this run expects ({config.n_channels}, H, W)")


def _tile_size(length: int, tile: int, overlap: int, multiple: int) -> int:
    """The tile side along an axis: no larger than ``tile``, as small as the fewest tiles allow.

    A short axis is one tile (its length rounded up to ``multiple``). A long one needs
    ``n = ceil((length - overlap) / (tile - overlap))`` tiles; sharing the length evenly among them
    (e.g. 2048 px: five 440 px tiles rather than five 512 px ones) saves up to half the work.
    """
    if length <= tile:
        return -(-length // multiple) * multiple
    n_tiles = -(-(length - overlap) // (tile - overlap))
    even = -(-(length + (n_tiles - 1) * overlap) // n_tiles)
    return min(tile, -(-even // multiple) * multiple)


def _pad_to(image: np.ndarray, min_height: int, min_width: int) -> np.ndarray:
    pad_y, pad_x = max(0, min_height - image.shape[1]), max(0, min_width - image.shape[2])
    if not (pad_y or pad_x):
        return image
    return np.pad(image, ((0, 0), (0, pad_y), (0, pad_x)), mode="symmetric")


def _tile_weights(length: int, tile: int, overlap: int) -> list[tuple[int, np.ndarray]]:
    """Tile starts along one axis with blending weights that sum to one at every position.

    Each tile ramps down over ``overlap`` pixels towards a neighbouring tile, so seams fade out;
    dividing by the per-axis sum makes the 2-D weights (outer products) a partition of unity.
    The overlap is capped at half a tile so that small images (one short tile) still advance.
    """
    overlap = min(overlap, tile // 2)
    stride = tile - overlap
    starts = list(range(0, max(length - tile, 0) + 1, stride))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    # A tile's outermost pixels saw zero padding inside the network; they get no weight where a neighbour
    # covers them (the outer third of the overlap), then a linear ramp hands over to the neighbour.
    margin = overlap // 3
    ramp = np.clip((np.arange(overlap, dtype=np.float32) + 1 - margin) / (overlap + 1 - 2 * margin), 0.0, 1.0)
    weights = []
    for index in range(len(starts)):
        weight = np.ones(tile, np.float32)
        if overlap and index > 0:
            weight[:overlap] = ramp
        if overlap and index < len(starts) - 1:
            weight[-overlap:] = ramp[::-1]
        weights.append(weight)
    total = np.zeros(length, np.float32)
    for start, weight in zip(starts, weights, strict=True):
        total[start:start + tile] += weight
    return [(start, weight / total[start:start + tile]) for start, weight in zip(starts, weights, strict=True)]
