"""Cell cores: the loss, the targets drawn from scribbles, stroke consistency and the seed threshold, by hand."""

import math

import numpy as np
import pytest
import torch

from factories import scribbled_images, tiny_config
from impartial.config import InstanceConfig, preset_config
from impartial.instances import watershed_instances
from impartial.losses import separation_loss, total_loss
from impartial.predict import predict_image
from impartial.separation import (
    ValidationRegion,
    cell_and_background_strokes,
    choose_seeds,
    core_targets,
    gap_strokes,
    stroke_consistency,
)
from impartial.train import Trainer

LN2 = math.log(2.0)


def softplus(value: float) -> float:
    return math.log1p(math.exp(value))


# --- the loss ---------------------------------------------------------------------------------------------------

def test_separation_loss_by_hand():
    # logits [[0, 2], [-1, 3]]; core at (0, 0) and (0, 1), not core at (1, 0), gap at (1, 1).
    # core side: (softplus(-0) + softplus(-2)) / 2 = (ln 2 + 0.126928) / 2
    # not-core side: softplus(-1) = 0.313262; gap side: softplus(3) = 3.048587; loss = mean of the three sides
    logits = torch.tensor([[[0.0, 2.0], [-1.0, 3.0]]])
    targets = torch.zeros(1, 3, 2, 2)
    targets[0, 0, 0, 0] = targets[0, 0, 0, 1] = targets[0, 1, 1, 0] = targets[0, 2, 1, 1] = 1
    core_side = (LN2 + softplus(-2.0)) / 2
    expected = (core_side + softplus(-1.0) + softplus(3.0)) / 3
    assert float(separation_loss(logits, targets)) == pytest.approx(expected)


def test_separation_loss_leaves_out_a_side_without_pixels():
    logits = torch.tensor([[[1.0, -1.0]]])
    targets = torch.zeros(1, 3, 1, 2)
    targets[0, 1, 0, 1] = 1  # only a not-core pixel, logit -1: softplus(-1)
    assert float(separation_loss(logits, targets)) == pytest.approx(softplus(-1.0))
    assert float(separation_loss(logits, torch.zeros(1, 3, 1, 2))) == 0


def test_total_loss_adds_the_weighted_separation_term():
    # whole cell + separation: 12 task outputs, then the core logit (0 -> sigmoid 1/2).
    # One core pixel and one not-core pixel: sep = (ln 2 + ln 2) / 2 = ln 2, weighted by wsep = 0.45.
    config = preset_config("quick", "whole_cell", separation=True)
    assert config.n_outputs == 13
    output = torch.zeros(1, 13, 2, 2, requires_grad=True)
    scribbles = torch.zeros(1, 5, 2, 2)
    scribbles[0, 2, 0, 0] = scribbles[0, 3, 1, 1] = 1
    mask = torch.zeros(1, 2, 2, 2, dtype=torch.bool)
    total, parts = total_loss(output, torch.zeros(1, 2, 2, 2), mask, scribbles, config)
    assert float(parts["sep"]) == pytest.approx(LN2)
    assert total.item() == pytest.approx(float(parts["scribble"] + 0.1 * parts["rec"]) + 0.45 * LN2)
    total.backward()
    assert output.grad[0, 12].abs().sum() > 0


def test_total_loss_checks_the_target_channels():
    config = preset_config("quick", "whole_cell", separation=True)
    with pytest.raises(ValueError, match="expected 5"):
        total_loss(torch.zeros(1, 13, 2, 2), torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, 2, dtype=torch.bool),
                   torch.zeros(1, 2, 2, 2), config)


# --- targets from scribbles -------------------------------------------------------------------------------------

def test_core_targets_mark_cell_strokes_and_the_border_near_background_strokes():
    # One row: cell stroke at x = 0..1, background stroke at x = 5, margin 2:
    # not core = pixels within 2 px of x = 5 -> x = 3..7, never on the cell stroke; one stroke: no gap.
    config = preset_config("quick", "whole_cell", **{"train.core_margin": 2})
    scribbles = np.zeros((1, 9, 2), np.uint8)
    scribbles[0, 0:2, 0] = 1
    scribbles[0, 5, 1] = 1
    targets = core_targets(scribbles, config)
    assert targets.shape == (1, 9, 3) and targets.dtype == np.uint8
    assert targets[0, :, 0].tolist() == [1, 1, 0, 0, 0, 0, 0, 0, 0]
    assert targets[0, :, 1].tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 0]
    assert not targets[..., 2].any()


def test_a_background_stroke_between_two_cell_strokes_is_a_gap():
    # Row: cell strokes at x = 2 and x = 10 (two pieces), background strokes at x = 6 and x = 17, margin 1.
    # x = 6 has both strokes within GAP_REACH = 6 px: gap = x 5..7. x = 17 sees only the stroke at 10 (7 px away).
    config = preset_config("quick", "whole_cell", **{"train.core_margin": 1})
    scribbles = np.zeros((1, 20, 2), np.uint8)
    scribbles[0, [2, 10], 0] = 1
    scribbles[0, [6, 17], 1] = 1
    targets = core_targets(scribbles, config)
    assert np.flatnonzero(targets[0, :, 2]).tolist() == [5, 6, 7]
    assert np.flatnonzero(targets[0, :, 1]).tolist() == [5, 6, 7, 16, 17, 18]


def test_gap_strokes_are_the_background_strokes_between_two_cell_strokes():
    # The same row: only the background stroke at x = 6 has two cell strokes within GAP_REACH.
    config = preset_config("quick", "whole_cell")
    scribbles = np.zeros((1, 20, 2), np.uint8)
    scribbles[0, [2, 10], 0] = 1
    scribbles[0, [6, 17], 1] = 1
    assert np.flatnonzero(gap_strokes(scribbles, config)[0]).tolist() == [6]


def test_core_targets_of_the_vectra_tasks_use_every_cell_part_and_their_backgrounds():
    # channels: [cytoplasm, bg | nucleus_in, nucleus_out, bg]
    config = preset_config("quick", "vectra", **{"train.core_margin": 0})
    scribbles = np.zeros((1, 5, 5), np.uint8)
    scribbles[0, 0, 0] = scribbles[0, 1, 2] = scribbles[0, 2, 3] = 1  # cytoplasm, nucleus_in, nucleus_out
    scribbles[0, 3, 1] = scribbles[0, 4, 4] = 1  # backgrounds of both tasks
    cells, background = cell_and_background_strokes(scribbles, config)
    assert cells[0].tolist() == [True, True, True, False, False]
    assert background[0].tolist() == [False, False, False, True, True]
    assert core_targets(scribbles, config)[0, :, 1].tolist() == [0, 0, 0, 1, 1]


# --- stroke consistency -----------------------------------------------------------------------------------------

@pytest.fixture
def two_cells_two_strokes():
    """Two 4 x 4 cells side by side, one horizontal stroke in each, a background stroke below them."""
    cells = np.zeros((8, 10), np.int32)
    cells[1:5, 1:5], cells[1:5, 5:9] = 1, 2
    cell_strokes = np.zeros_like(cells, bool)
    cell_strokes[2, 2:4] = cell_strokes[2, 6:8] = True
    background = np.zeros_like(cell_strokes)
    background[6, 1:9] = True
    return cells, cell_strokes, background


def test_stroke_consistency_is_one_when_each_stroke_has_its_own_cell(two_cells_two_strokes):
    assert stroke_consistency(*two_cells_two_strokes) == 1.0


def test_stroke_consistency_counts_two_strokes_in_one_cell_as_inconsistent(two_cells_two_strokes):
    cells, strokes, background = two_cells_two_strokes
    merged = np.where(cells > 0, 1, 0)
    # both strokes claim cell 1: 0 of 2 consistent; background all outside: 1.0 -> mean 0.5
    assert stroke_consistency(merged, strokes, background) == 0.5


def test_stroke_consistency_counts_a_split_stroke_and_cells_on_background(two_cells_two_strokes):
    cells, strokes, background = two_cells_two_strokes
    split = cells.copy()
    split[1:5, 3:5] = 3  # the first stroke (x = 2..3) now has half its pixels in cell 3: below the 0.8 share
    split[6, 1:3] = 2  # 2 of the 8 background-stroke pixels fall in a cell
    assert stroke_consistency(split, strokes, background) == pytest.approx((1 / 2 + 6 / 8) / 2)


def test_stroke_consistency_without_strokes_is_one():
    empty = np.zeros((3, 3), bool)
    assert stroke_consistency(np.zeros((3, 3), np.int32), empty, empty) == 1.0


# --- seeds from cores -------------------------------------------------------------------------------------------

@pytest.fixture
def touching_cells_with_cores():
    """Two 20 x 20 cells sharing an edge with no gap in the cell probability; cores 0.9 inside, 0.6 at the edge."""
    cells = np.zeros((30, 50), np.int32)
    cells[5:25, 5:25], cells[5:25, 25:45] = 1, 2
    cell_prob = np.where(cells > 0, 0.95, 0.02)
    core_prob = np.where(cells > 0, 0.6, 0.0)
    core_prob[8:22, 8:22] = core_prob[8:22, 28:42] = 0.9
    return cells, cell_prob, core_prob


def test_watershed_from_cores_separates_touching_cells(touching_cells_with_cores):
    cells, cell_prob, core_prob = touching_cells_with_cores
    found, nuclei = watershed_instances(cell_prob, None, None, InstanceConfig(core_threshold=0.7, grow=0),
                                        core_prob=core_prob)
    assert found.max() == 2 and nuclei is None
    assert np.array_equal(found == found[15, 15], cells == 1)


def test_seeds_are_chosen_by_the_held_out_strokes(touching_cells_with_cores):
    # Below 0.6 the two cores join into one seed (one cell holds both strokes); from 0.6 on they are apart.
    # Scores: 0.5 for 0.1 .. 0.5, 1.0 for 0.6 .. 0.8, and 0.9 leaves no seed (one cell again): 0.6 is closest to 0.5.
    # Nuclei: the image's nuclear channel is empty, so the distance peaks of the one joint region seed it: 0.5.
    cells, cell_prob, core_prob = touching_cells_with_cores
    strokes = np.zeros(cells.shape, bool)
    strokes[15, 10:20] = strokes[15, 30:40] = True
    background = np.zeros(cells.shape, bool)
    background[27, :] = True
    region = ValidationRegion(np.zeros((2, *cells.shape), np.float32), cell_prob, None, core_prob, strokes, background)
    assert choose_seeds([region], InstanceConfig(grow=0)) == {"seeds": "core", "core_threshold": 0.6}
    assert region.consistency(InstanceConfig(core_threshold=0.3, grow=0)) == 0.5


def test_nuclei_are_chosen_when_they_split_the_cells_and_the_cores_do_not(touching_cells_with_cores):
    # Cores joined everywhere (0.6 over both cells): every core threshold gives one cell or none (score 0.5).
    # The nuclear channel has one bright blob per cell: nucleus seeds split the cells (score 1.0).
    cells, cell_prob, _ = touching_cells_with_cores
    joined = np.where(cells > 0, 0.6, 0.0)
    image = np.zeros((2, *cells.shape), np.float32)
    image[1, 12:18, 12:18] = image[1, 12:18, 32:38] = 1.0
    strokes = np.zeros(cells.shape, bool)
    strokes[15, 8:11] = strokes[15, 40:43] = True
    background = np.zeros(cells.shape, bool)
    background[27, :] = True
    region = ValidationRegion(image, cell_prob, None, joined, strokes, background)
    chosen = choose_seeds([region], InstanceConfig(grow=0))
    assert chosen["seeds"] == "nuclei"
    assert region.consistency(InstanceConfig(grow=0, **chosen)) == 1.0


def test_a_run_with_separation_records_its_seeds_and_predicts_cores(tmp_path):
    config = tiny_config(separation=True, **{"train.prior": False})
    run = Trainer(config, scribbled_images(config), tmp_path / "run").run()
    assert set(run.thresholds) == {"threshold", "nucleus_threshold", "core_threshold", "seeds",
                                   "membrane_fills_cells", "cells_show_stain"}
    assert run.thresholds["seeds"] in ("core", "nuclei") and 0 < run.thresholds["core_threshold"] < 1
    assert "sep" in run.history and run.history["sep"].gt(0).all()
    prediction = predict_image(run, scribbled_images(config, seeds=(5,))[0].image)
    assert prediction.core.shape == prediction.core_variance.shape == (96, 96)
    assert 0 <= prediction.core.min() and prediction.core.max() <= 1 and prediction.core_variance.max() > 0
