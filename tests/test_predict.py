"""Tiled prediction, MC-dropout statistics and entropy."""

import numpy as np
import pytest
import torch

from factories import tiny_config
from impartial.errors import InputError
from impartial.model import build_model
from impartial.predict import _tile_size, _tile_weights, normalised_entropy, predict_with_models


def test_tile_weights_sum_to_one_everywhere():
    # length 10, tiles of 6 with overlap 2 -> starts 0 and 4; the ramp over 2 px is (1/3, 2/3).
    tiles = _tile_weights(10, 6, 2)
    assert [start for start, _ in tiles] == [0, 4]
    total = np.zeros(10)
    for start, weight in tiles:
        total[start:start + 6] += weight
    np.testing.assert_allclose(total, 1.0, rtol=1e-6)
    # the first tile alone covers 0..3, then fades: 4 -> 1/3 of the own ramp (2/3) normalised by (2/3 + 1/3)
    np.testing.assert_allclose(tiles[0][1][:4], 1.0)
    np.testing.assert_allclose(tiles[0][1][4:], [2 / 3, 1 / 3], rtol=1e-6)


def test_single_tile_when_image_is_small():
    # a short axis becomes one tile, rounded up to the network's size multiple (the image is padded)
    assert _tile_size(40, 512, 32, 8) == 40 and _tile_size(41, 512, 32, 8) == 48


def test_long_axes_share_their_length_evenly():
    # 2048 px with 512 px tiles overlapping by 32 needs 5 tiles; (2048 + 4 * 32) / 5 = 435.2 -> 440 (multiple of 8)
    assert _tile_size(2048, 512, 32, 8) == 440
    starts = [start for start, _ in _tile_weights(2048, 440, 32)]
    assert len(starts) == 5 and starts[-1] + 440 == 2048
    assert _tile_size(1000, 512, 32, 8) == 360  # 2 x 512 - 32 < 1000: three tiles, (1000 + 64) / 3 -> 360
    assert [start for start, _ in _tile_weights(48, 48, 16)] == [0]


def test_tile_edges_get_no_weight_under_a_neighbour():
    # overlap 6 -> margin 2: the ramp is (0, 0, 1/3, 2/3, 1, 1) on the way in
    (_, first), (_, second) = _tile_weights(22, 14, 6)
    np.testing.assert_allclose(second[:6], [0, 0, 1 / 3, 2 / 3, 1, 1], atol=1e-6)
    np.testing.assert_allclose(first[-6:], [1, 1, 2 / 3, 1 / 3, 0, 0], atol=1e-6)


def test_overlap_larger_than_a_short_tile_is_capped():
    # a 16-px strip with a 24-px overlap used to give a zero stride
    tiles = _tile_weights(16, 16, 24)
    assert [start for start, _ in tiles] == [0]
    np.testing.assert_allclose(tiles[0][1], 1.0)
    total = np.zeros(40)
    for start, weight in _tile_weights(40, 16, 24):
        total[start:start + 16] += weight
    np.testing.assert_allclose(total, 1.0, rtol=1e-6)


def test_entropy_by_hand():
    # one class: p = 0.5 -> maximal (1.0 after scaling by log 2); p = 1 -> 0; p = 0.25 -> H(0.25, 0.75) / log 2
    foreground = np.array([[[0.5, 1.0, 0.25]]], np.float32)
    expected_last = -(0.25 * np.log(0.25) + 0.75 * np.log(0.75)) / np.log(2)
    np.testing.assert_allclose(normalised_entropy(foreground)[0], [1.0, 0.0, expected_last], atol=1e-5)


def _sharp_model(config):
    """A random model with enlarged weights, so its probabilities vary strongly over the image."""
    torch.manual_seed(0)
    model = build_model(config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(2.5)
    return model


def test_tiled_prediction_matches_whole_image():
    config = tiny_config(**{"model.dropout": 0.0, "predict.tile": 128, "predict.overlap": 48})
    image = np.random.default_rng(0).normal(size=(2, 300, 260)).astype(np.float32)
    model = _sharp_model(config)
    tiled = predict_with_models([model], config, image, passes=1, mc_dropout=False)
    config.predict.tile = 512
    whole = predict_with_models([model], config, image, passes=1, mc_dropout=False)
    a, b = tiled.tasks[0].class_segmentation, whole.tasks[0].class_segmentation
    assert a.shape == (1, 300, 260)
    assert b.std() > 0.05  # the comparison means something: the map is not flat
    # the network sees about 20 px on each side; the blend trusts no tile within 16 px of its edge
    assert np.abs(a - b).mean() < 0.001
    assert np.abs(a - b).max() < 0.02


def test_bfloat16_prediction_stays_close_to_float32():
    config = tiny_config(**{"model.dropout": 0.0})
    image = np.random.default_rng(3).normal(size=(2, 64, 64)).astype(np.float32)
    model = _sharp_model(config)
    exact = predict_with_models([model], config, image, passes=1, mc_dropout=False)
    config.train.precision = "bfloat16"
    reduced = predict_with_models([model], config, image, passes=1, mc_dropout=False)
    a, b = exact.tasks[0].class_segmentation, reduced.tasks[0].class_segmentation
    assert b.dtype == np.float32 and a.std() > 0.05
    assert 0 < np.abs(a - b).mean() < 0.01  # bfloat16 did run, and changed little


def test_mc_dropout_gives_variance_and_ensemble_shapes():
    config = tiny_config("tissuenet", **{"model.dropout": 0.3})
    image = np.random.default_rng(1).normal(size=(2, 40, 56)).astype(np.float32)
    models = [_sharp_model(config), _sharp_model(config)]
    prediction = predict_with_models(models, config, image, passes=3, mc_dropout=True)
    assert [task.name for task in prediction.tasks] == ["cells", "nuclei"]
    cells = prediction.tasks[0]
    assert cells.class_segmentation.shape == cells.class_segmentation_variance.shape == (1, 40, 56)
    assert cells.class_segmentation_variance.max() > 0
    assert 0.0 <= prediction.entropy().min() and prediction.entropy().max() <= 1.0 + 1e-6
    arrays = prediction.arrays()
    assert arrays["class_segmentation"].shape == (2, 40, 56) and arrays["entropy"].shape == (2, 40, 56)
    assert arrays["class_names"] == ["cell", "nucleus"]


class _ScriptedModel(torch.nn.Module):
    """Outputs whose cell probability is scripted per sample: component 0's logit is ``log(e)`` with
    ``e = (3p - 1) / (1 - p)``, the other three components' are 0, so P(cell) = (e + 1) / (e + 3) = p."""

    def __init__(self, config, probabilities):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives the model a device
        self.n_outputs, self.probabilities, self.batch_sizes = config.n_outputs, list(probabilities), []

    def forward(self, x):
        self.batch_sizes.append(len(x))
        p = torch.tensor([self.probabilities.pop(0) for _ in range(len(x))])
        out = torch.zeros(len(x), self.n_outputs, *x.shape[2:])
        out[:, 0] = torch.log((3 * p - 1) / (1 - p))[:, None, None]
        return out


def test_passes_run_predict_batch_at_a_time_and_pool_over_models():
    config = tiny_config(**{"predict.batch": 2})
    image = np.zeros((2, 16, 16), np.float32)
    models = [_ScriptedModel(config, [0.5, 0.75, 0.5]), _ScriptedModel(config, [0.75, 0.5, 0.75])]
    prediction = predict_with_models(models, config, image, passes=3)
    assert [model.batch_sizes for model in models] == [[2, 1], [2, 1]]
    # six samples, three of 0.5 and three of 0.75: mean 0.625, variance 0.125 ** 2
    np.testing.assert_allclose(prediction.tasks[0].class_segmentation, 0.625, rtol=1e-5)
    np.testing.assert_allclose(prediction.tasks[0].class_segmentation_variance, 0.015625, rtol=1e-4)


def test_eval_mode_has_no_variance():
    config = tiny_config()
    image = np.random.default_rng(2).normal(size=(2, 32, 32)).astype(np.float32)
    prediction = predict_with_models([_sharp_model(config)], config, image, passes=4, mc_dropout=False)
    assert prediction.tasks[0].class_segmentation_variance.max() == 0


def test_wrong_channel_count_is_reported():
    config = tiny_config()
    with pytest.raises(InputError, match="expects \\(2, H, W\\)"):
        predict_with_models([build_model(config)], config, np.zeros((3, 32, 32), np.float32), passes=1)


class _RampModel(torch.nn.Module):
    """Not mirror-symmetric: the first cell component's logit rises from left to right, whatever the input."""

    def __init__(self, n_outputs: int) -> None:
        super().__init__()
        self.n_outputs = n_outputs
        self.unused = torch.nn.Parameter(torch.zeros(1))  # gives the model a device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(len(x), self.n_outputs, *x.shape[2:])
        out[:, 0] = torch.linspace(-3.0, 3.0, x.shape[-1])
        return out


def test_test_time_flips_average_mirrored_passes():
    # passes see the tile as is, mirrored left-right, up-down and both, each flipped back: over four passes the
    # left-right ramp of this model averages to a symmetric map; without flips it stays a ramp.
    config = tiny_config()
    image = np.zeros((2, 32, 48), np.float32)
    flipped = predict_with_models([_RampModel(config.n_outputs)], config, image, passes=4).tasks[0]
    cell = flipped.class_segmentation[0]
    np.testing.assert_allclose(cell, cell[:, ::-1], atol=1e-6)
    assert flipped.class_segmentation_variance.max() > 0  # the mirrored passes disagree: variance shows it
    config.predict.flips = False
    plain = predict_with_models([_RampModel(config.n_outputs)], config, image, passes=4).tasks[0]
    assert plain.class_segmentation[0, 0, -1] > plain.class_segmentation[0, 0, 0] + 0.5


def test_predictions_on_the_cpu_take_turns(monkeypatch):
    import threading
    import time
    from types import SimpleNamespace

    from impartial import predict

    active, most = [0], [0]
    lock = threading.Lock()

    def slow_prediction(*args, **kwargs):
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        time.sleep(0.05)
        with lock:
            active[0] -= 1

    monkeypatch.setattr(predict, "load_models", lambda run, device: [])
    monkeypatch.setattr(predict, "predict_with_models", slow_prediction)
    run = SimpleNamespace(config=tiny_config())
    threads = [threading.Thread(target=predict.predict_image, args=(run, None), kwargs={"device": torch.device("cpu")})
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most[0] == 1
