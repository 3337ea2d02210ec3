"""The random-forest baseline: filter features by hand, and learning a toy image from a few scribbles."""

import numpy as np
import pytest

from impartial.baseline import RandomForestBaseline, filter_features
from impartial.errors import InputError


def test_feature_shape_and_order():
    image = np.random.default_rng(0).random((2, 16, 20)).astype(np.float32)
    features = filter_features(image, sigmas=(1.0, 2.0))
    assert features.shape == (2 * 2 * 6, 16, 20) and features.dtype == np.float32


def test_features_of_a_parabola():
    # f = r^2 has second derivatives d_rr = 2, d_cc = d_rc = 0 everywhere, unchanged by Gaussian smoothing.
    rows = np.arange(40, dtype=np.float32)[:, None] - 20
    image = np.broadcast_to(rows**2, (40, 40))[None]
    smoothed, laplacian, gradient, large, small, dog = filter_features(image, sigmas=(1.0,))[:, 20, 20]
    assert laplacian == pytest.approx(2.0, abs=1e-2)
    assert large == pytest.approx(2.0, abs=1e-2) and small == pytest.approx(0.0, abs=1e-2)
    assert smoothed == pytest.approx(1.0, abs=1e-2)  # Gaussian of r^2 at r = 0 is sigma^2
    assert gradient == pytest.approx(0.0, abs=1e-2)
    assert dog == pytest.approx(1.0 - 1.6**2, abs=1e-2)


def toy_image(seed: int) -> np.ndarray:
    """(1, 32, 32): dark left half, bright right half, with noise."""
    rng = np.random.default_rng(seed)
    image = np.where(np.arange(32) < 16, 0.1, 0.9)[None].repeat(32, 0)[None]
    return (image + rng.normal(0, 0.05, image.shape)).astype(np.float32)


def test_learns_bright_versus_dark_from_a_few_scribbles():
    scribbles = np.zeros((32, 32, 2), np.uint8)
    scribbles[4:28:2, [20, 29], 0] = 1  # two dotted strokes (24 px) in the bright half
    scribbles[4:28:2, [2, 11], 1] = 1  # and two in the dark half
    forest = RandomForestBaseline(n_estimators=20).fit([toy_image(0)], [scribbles], n_classes=1)
    probabilities = forest.predict_proba(toy_image(1))
    assert probabilities.shape == (2, 32, 32) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=0), 1.0, atol=1e-5)
    assert probabilities[0, :, 20:].min() > 0.8
    assert probabilities[0, :, :12].max() < 0.5  # every dark pixel is background


def test_a_class_without_scribbles_gets_zero_and_bad_input_raises():
    scribbles = np.zeros((32, 32, 3), np.uint8)
    scribbles[8:12, 24, 0] = 1
    scribbles[20:24, 6, 2] = 1  # background of a two-class task; class 1 has no scribble
    forest = RandomForestBaseline(n_estimators=5).fit([toy_image(0)], [scribbles], n_classes=2)
    assert forest.predict_proba(toy_image(1))[1].max() == 0.0
    with pytest.raises(InputError):
        forest.predict_proba(np.zeros((2, 32, 32), np.float32))
    with pytest.raises(InputError):
        RandomForestBaseline().fit([toy_image(0)], [np.zeros((32, 32, 2), np.uint8)], n_classes=1)
