"""The unit of training data: one normalised image with its scribbles."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError


@dataclass
class TrainingImage:
    """One image ready for training.

    Attributes:
        name: shown in messages and used for output file names.
        image: (C, H, W) float32, normalised per channel.
        scribbles: (H, W, S) uint8 0/1 in the method's layout (per task: classes, then background).
        val_mask: (H, W) bool, the held-out validation box; None = no validation pixels.
        labels: (H, W) int32 whole-cell instances for evaluation, if known.
    """

    name: str
    image: np.ndarray
    scribbles: np.ndarray
    val_mask: np.ndarray | None = None
    labels: np.ndarray | None = None

    def check(self, n_channels: int, n_scribble_channels: int) -> TrainingImage:
        """Raise InputError (naming this image) when shapes disagree with the config. Returns self."""
        channels, height, width = self.image.shape
        if channels != n_channels:
            raise InputError(f"has {channels} channel(s), the project expects {n_channels}", self.name)
        if self.scribbles.shape != (height, width, n_scribble_channels):
            raise InputError(f"scribbles have shape {self.scribbles.shape}, expected "
                             f"{(height, width, n_scribble_channels)}", self.name)
        for label, array in (("validation mask", self.val_mask), ("labels", self.labels)):
            if array is not None and array.shape != (height, width):
                raise InputError(f"{label} have shape {array.shape}, expected {(height, width)}", self.name)
        return self
