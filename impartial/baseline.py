"""The ilastik approach as the benchmark baseline: filter-bank features and a random forest on scribbled pixels.

Features per channel and scale sigma: Gaussian smoothing, Laplacian of Gaussian, Gaussian gradient magnitude,
the two Hessian eigenvalues and a difference of Gaussians, all from ``scipy.ndimage``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from sklearn.ensemble import RandomForestClassifier

from .errors import InputError

DEFAULT_SIGMAS = (0.7, 1.0, 1.6, 3.5, 5.0, 10.0)
FEATURES_PER_SCALE = 6
# Difference of Gaussians: smoothing at sigma minus smoothing at this multiple of sigma (a band-pass around sigma).
_DOG_RATIO = 1.6


def filter_features(image: np.ndarray, sigmas: tuple[float, ...] = DEFAULT_SIGMAS) -> np.ndarray:
    """Filter-bank features of every pixel.

    Args:
        image: (C, H, W) float image.
        sigmas: Gaussian scales in pixels.

    Returns:
        (C * len(sigmas) * 6, H, W) float32, ordered channel, then sigma, then filter (smoothed, Laplacian of
        Gaussian, gradient magnitude, larger and smaller Hessian eigenvalue, difference of Gaussians).
    """
    if image.ndim != 3:
        raise InputError(f"the image must be (C, H, W), got shape {image.shape}")
    channels = image.astype(np.float32)
    return np.stack([feature for channel in channels for sigma in sigmas
                     for feature in _scale_features(channel, sigma)]).astype(np.float32)


def _scale_features(channel: np.ndarray, sigma: float) -> list[np.ndarray]:
    """The six (H, W) features of one channel at one scale."""
    smoothed = ndi.gaussian_filter(channel, sigma)
    d_rr = ndi.gaussian_filter(channel, sigma, order=(2, 0))
    d_cc = ndi.gaussian_filter(channel, sigma, order=(0, 2))
    d_rc = ndi.gaussian_filter(channel, sigma, order=(1, 1))
    # Eigenvalues of the symmetric 2 x 2 Hessian [[d_rr, d_rc], [d_rc, d_cc]] in closed form.
    mean = (d_rr + d_cc) / 2
    radius = np.sqrt(((d_rr - d_cc) / 2) ** 2 + d_rc**2)
    return [
        smoothed,
        d_rr + d_cc,  # the Laplacian of Gaussian, from the same second derivatives
        ndi.gaussian_gradient_magnitude(channel, sigma),
        mean + radius,
        mean - radius,
        smoothed - ndi.gaussian_filter(channel, sigma * _DOG_RATIO),
    ]


class RandomForestBaseline:
    """Pixel classifier of the first task's classes and background, trained on scribbled pixels only.

    Example::

        forest = RandomForestBaseline().fit(images, scribbles, n_classes=1)
        probabilities = forest.predict_proba(image)  # (2, H, W): cell, background
    """

    def __init__(self, n_estimators: int = 100, max_depth: int | None = None, seed: int = 0,
                 sigmas: tuple[float, ...] = DEFAULT_SIGMAS, max_samples: int = 200_000) -> None:
        self.sigmas = sigmas
        self.max_samples = max_samples
        self.seed = seed
        self.n_classes = 0
        self.n_channels = 0
        self.forest = RandomForestClassifier(n_estimators=n_estimators, max_depth=max_depth, random_state=seed,
                                             n_jobs=-1)

    def fit(self, images: list[np.ndarray], scribbles: list[np.ndarray], n_classes: int) -> RandomForestBaseline:
        """Train on the scribbled pixels of all images.

        Args:
            images: (C, H, W) float images.
            scribbles: (H, W, S) 0/1 maps in the method's layout; the first ``n_classes + 1`` maps (the first task's
                classes, then its background) are used. A pixel scribbled in several maps takes the first.
            n_classes: foreground classes of the first task.

        Returns:
            self. At most ``max_samples`` scribbled pixels, drawn at random, train the forest.
        """
        if n_classes < 1:
            raise InputError(f"the baseline needs at least one foreground class, got n_classes = {n_classes}")
        if len(images) != len(scribbles) or not images:
            raise InputError(f"need one scribble map per image, got {len(images)} images, {len(scribbles)} maps")
        features, targets = [], []
        for image, scribble in zip(images, scribbles, strict=True):
            rows, cols, classes = _scribbled_pixels(image, scribble, n_classes)
            features.append(filter_features(image, self.sigmas)[:, rows, cols].T)
            targets.append(classes)
        x, y = np.concatenate(features), np.concatenate(targets)
        if y.size == 0:
            raise InputError("the scribbles mark no pixel: nothing to train the random forest on")
        if y.size > self.max_samples:
            chosen = np.random.default_rng(self.seed).choice(y.size, self.max_samples, replace=False)
            x, y = x[chosen], y[chosen]
        self.forest.fit(x, y)
        self.n_classes, self.n_channels = n_classes, images[0].shape[0]
        return self

    def predict_proba(self, image: np.ndarray) -> np.ndarray:
        """(n_classes + 1, H, W) float32 probabilities of the classes then background for a (C, H, W) image.

        A class without any training pixel gets probability 0 everywhere.
        """
        if not self.n_classes:
            raise RuntimeError("fit the baseline before predicting")
        if image.ndim != 3 or image.shape[0] != self.n_channels:
            raise InputError(f"the image must be ({self.n_channels}, H, W) like the training images, "
                             f"got shape {image.shape}")
        features = filter_features(image, self.sigmas)
        height, width = image.shape[1:]
        probabilities = np.zeros((self.n_classes + 1, height * width), np.float32)
        probabilities[self.forest.classes_] = self.forest.predict_proba(features.reshape(len(features), -1).T).T
        return probabilities.reshape(self.n_classes + 1, height, width)


def _scribbled_pixels(image: np.ndarray, scribble: np.ndarray,
                      n_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows, columns and class (all (N,) int64) of the pixels scribbled in the first n_classes + 1 maps."""
    if scribble.ndim != 3 or scribble.shape[:2] != image.shape[1:] or scribble.shape[2] < n_classes + 1:
        raise InputError(f"scribbles {scribble.shape} must be (H, W, >= {n_classes + 1}) for image {image.shape}")
    marked = scribble[..., : n_classes + 1] > 0
    rows, cols = np.nonzero(marked.any(axis=-1))
    return rows, cols, np.argmax(marked[rows, cols], axis=-1)
