"""The pretrained prior: its dense targets by hand, which weights a run takes from it, and the shipped file."""

import dataclasses

import numpy as np
import pytest
import torch

from factories import scribbled_images, tiny_config
from impartial import prior
from impartial.config import preset_config
from impartial.model import build_model
from impartial.prior import dense_targets, prior_config, prior_path, prior_weights, varied_tissue
from impartial.runs import Run
from impartial.train import Trainer

CPU = torch.device("cpu")


def test_dense_targets_part_touching_cells_and_keep_cores_off_the_border():
    # Row [1 1 1 2 2 2 0]: the touching pixels (x = 2, 3) become a gap of background.
    # Cell = x 0, 1, 4, 5. Distance to background: x0 = 2, x1 = 1, x4 = 1, x5 = 1; margin 1 -> core = x 0 only.
    # Gap: within 1 px of the touching pixels -> x 1..4.
    cells = np.array([[1, 1, 1, 2, 2, 2, 0]], np.int32)
    targets = dense_targets(cells, core_margin=1)
    assert targets.dtype == np.uint8 and targets.shape == (1, 7, 5)
    assert targets[0, :, 0].tolist() == [1, 1, 0, 0, 1, 1, 0]  # cell
    assert targets[0, :, 1].tolist() == [0, 0, 1, 1, 0, 0, 1]  # background
    assert targets[0, :, 2].tolist() == [1, 0, 0, 0, 0, 0, 0]  # core
    assert targets[0, :, 3].tolist() == [0, 1, 1, 1, 1, 1, 1]  # not core
    assert targets[0, :, 4].tolist() == [0, 1, 1, 1, 1, 0, 0]  # gap


def test_varied_tissue_draws_different_looking_images():
    rng = np.random.default_rng(0)
    first, second = varied_tissue(rng, 64), varied_tissue(rng, 64)
    assert first.image.shape == (2, 64, 64) and first.cells.max() > 0
    assert not np.array_equal(first.cells, second.cells)


@pytest.fixture
def tiny_prior(tmp_path, monkeypatch):
    """A prior file for the tests' tiny network, holding the weights of a seeded model."""
    monkeypatch.setattr(prior, "PRIOR_DIR", tmp_path / "priors")
    config = tiny_config(separation=True)
    torch.manual_seed(123)
    weights = build_model(config).state_dict()
    path = prior_path(config)
    path.parent.mkdir()
    torch.save({name: value.half() for name, value in weights.items()}, path)
    return config, weights


def test_a_run_of_the_same_shape_takes_every_weight(tiny_prior):
    config, weights = tiny_prior
    taken = prior_weights(config, CPU)
    assert set(taken) == set(weights)
    assert torch.equal(taken["head.weight"], weights["head.weight"].half().float())


def test_a_run_with_other_tasks_takes_the_body_but_not_the_output_layer(tiny_prior):
    config, weights = tiny_prior
    taken = prior_weights(tiny_config("vectra", separation=True), CPU)
    assert set(taken) == {name for name in weights if not name.startswith("head.")}


def test_no_prior_for_another_shape(tiny_prior):
    assert prior_weights(tiny_config(separation=True, **{"model.base": 4}), CPU) is None


def test_a_run_without_separation_takes_the_task_rows_of_the_output_layer(tiny_prior):
    # The prior's output layer is [task outputs | core logit]: without separation the last row is left out.
    config, weights = tiny_prior
    without = dataclasses.replace(config, separation=False)
    taken = prior_weights(without, CPU)
    assert set(taken) == set(weights)
    head = weights["head.weight"].half().float()
    assert taken["head.weight"].shape[0] == without.n_outputs == head.shape[0] - 1
    assert torch.equal(taken["head.weight"], head[:-1])
    assert torch.equal(taken["head.bias"], weights["head.bias"].half().float()[:-1])
    build_model(without).load_state_dict(taken)  # every weight fits


def test_training_starts_from_the_prior_when_switched_on(tiny_prior, tmp_path):
    # With a vanishing learning rate the checkpoint keeps its starting weights.
    config, weights = tiny_prior
    config = tiny_config(separation=True, **{"train.lr": 1e-12, "train.epochs": 1, "train.prior": True})
    dataset = scribbled_images(config)
    started = Run.load(Trainer(config, dataset, tmp_path / "with").run().dir)
    checkpoint = torch.load(started.checkpoints[0], weights_only=True, map_location="cpu")
    assert torch.allclose(checkpoint["head.weight"], weights["head.weight"].half().float(), atol=1e-6)

    config.train.prior = False
    scratch = Run.load(Trainer(config, dataset, tmp_path / "without").run().dir)
    checkpoint = torch.load(scratch.checkpoints[0], weights_only=True)
    assert not torch.allclose(checkpoint["head.weight"], weights["head.weight"].half().float(), atol=1e-3)


@pytest.mark.parametrize("separation", [True, False])
def test_the_shipped_prior_fits_the_quick_preset(separation):
    config = preset_config("quick", separation=separation)
    assert prior_path(config) == prior_path(prior_config())
    taken = prior_weights(config, CPU)
    assert taken is not None and set(taken) == set(build_model(config).state_dict())
    build_model(config).load_state_dict(taken)
