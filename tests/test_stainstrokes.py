"""Automatic strokes from the stains: the confident masks by hand, where they may go, and the trainer's use."""

import dataclasses

import numpy as np
import pytest

from factories import scribbled_images, tiny_config
from impartial import train
from impartial.config import apply_overrides, preset_config
from impartial.errors import InputError
from impartial.stainstrokes import (
    ENOUGH_CELL_STROKES,
    USER_REACH,
    bright_thickness,
    confident_stains,
    fills_cells,
    run_stain_masks,
    stain_channels,
    with_stain_strokes,
)
from impartial.train import Trainer


def two_stains() -> np.ndarray:
    """(2, 40, 40): a bright 15 x 15 square in channel 0 (rows / columns 5-19), a 12 x 12 one in channel 1
    (24-35), both on black."""
    image = np.zeros((2, 40, 40), np.float32)
    image[0, 5:20, 5:20] = 1.0
    image[1, 24:36, 24:36] = 1.0
    return image


def test_confident_stains_are_the_bright_squares_shrunk_and_the_far_black():
    cell, background = confident_stains(two_stains(), [0, 1], nuclear_channel=None)
    # smoothed, each square crosses its Otsu level at its own edge; 2 px shrink: rows / columns 7-17 and 26-33
    assert cell[7:18, 7:18].all() and cell[26:34, 26:34].all()
    assert not cell[5, 5] and not cell[6, 12] and not cell[24, 30] and cell.sum() == 11 * 11 + 8 * 8
    # background: black in both channels and more than 4 px from either square
    assert background[0, 39] and background[39, 0] and background[30, 10]
    assert not background[21, 12] and not background[22, 30]  # 2 and 3 px from a square
    assert not (cell & background).any()


def test_a_stain_that_fills_cells_marks_them_and_a_membrane_stain_does_not():
    # channel 1 (nuclear): a 6 x 6 nucleus. Channel 0 first fills its 15 x 15 cell (thicker than the nucleus),
    # then only outlines it (a 2 px ring, thinner than the nucleus)
    image = np.zeros((2, 40, 40), np.float32)
    image[1, 10:16, 10:16] = 1.0
    image[0, 5:20, 5:20] = 1.0
    filling, _ = confident_stains(image, [0, 1], nuclear_channel=1)
    assert filling[7, 7] and filling[12, 12]
    image[0, 7:18, 7:18] = 0.0
    outlining, background = confident_stains(image, [0, 1], nuclear_channel=1)
    assert outlining[12, 12] and not outlining[5:20, 5:7].any()
    assert not background[5:20, 5:20].any()  # the ring is not background either


def test_fills_cells_tells_a_cytoplasm_stain_from_a_membrane_stain():
    image = np.zeros((3, 40, 40), np.float32)
    image[1, 10:16, 10:16] = 1.0  # a 6 x 6 nucleus
    image[0, 5:20, 5:20] = 1.0  # a filled 15 x 15 cell
    assert fills_cells(image, 0, nuclear_channel=1)
    image[0, 7:18, 7:18] = 0.0  # now a 2 px ring around it
    assert not fills_cells(image, 0, nuclear_channel=1)
    assert not fills_cells(image, 2, nuclear_channel=1) and not fills_cells(image, 0, nuclear_channel=2)  # blank


def test_only_the_chosen_channels_count_and_a_blank_one_says_nothing():
    image = two_stains()
    cell, _ = confident_stains(image, [1], nuclear_channel=None)
    assert cell[30, 30] and not cell[12, 12]
    image[1] = 0.0
    cell, background = confident_stains(image, [1], nuclear_channel=None)
    assert not cell.any() and not background.any()


def test_stain_channels_follow_the_instance_step():
    config = tiny_config()
    assert stain_channels(config) == [0, 1]  # membrane 0, nuclear 1
    assert stain_channels(apply_overrides(config, {"instances.membrane_channel": None})) == [1]
    no_channels = apply_overrides(config, {"instances.membrane_channel": None, "instances.nuclear_channel": None})
    assert stain_channels(no_channels) == [0, 1]


def test_automatic_strokes_keep_away_from_the_users_strokes_and_the_validation_box():
    config = tiny_config(**{"train.stain_strokes": 0.5})
    image = np.zeros((2, 80, 80), np.float32)
    image[1, 8:20, 8:20] = 1.0  # a nucleus the user scribbled over
    image[1, 50:70, 50:70] = 1.0  # one far from the user's stroke, its right part held out
    scribbles = np.zeros((80, 80, 2), np.uint8)
    scribbles[12:14, 10:18, 1] = 1  # the user calls part of the first nucleus background
    val_mask = np.zeros((80, 80), bool)
    val_mask[:, 62:] = True
    result = with_stain_strokes(scribbles, image, val_mask, config, np.random.default_rng(0))
    added = result.any(axis=-1) & ~scribbles.any(axis=-1)
    assert np.array_equal(result[scribbles.any(axis=-1)], scribbles[scribbles.any(axis=-1)])
    assert not added[val_mask].any()
    rows, columns = np.mgrid[:80, :80]
    from_stroke = np.hypot(np.maximum.reduce([12 - rows, 0 * rows, rows - 13]),
                           np.maximum.reduce([10 - columns, 0 * columns, columns - 17]))
    assert not added[from_stroke <= USER_REACH].any()  # the user's strokes speak near them
    assert added[from_stroke > USER_REACH + 2].any()
    far_cell = np.zeros((80, 80), bool)
    far_cell[52:68, 52:62] = True  # the far nucleus shrunk by 2 px, left of the validation box
    assert not (result[..., 0].astype(bool) & ~far_cell).any()
    assert 0.4 < result[..., 0][far_cell].mean() < 0.6  # about half, as asked
    assert result[..., 1][30:40, :10].any() and not result[..., 1][50:70, 50:70].any()  # background: the black
    assert scribbles.sum() == 16  # the input is not modified


def test_an_image_whose_cells_the_user_has_shown_gets_no_automatic_strokes():
    config = tiny_config(**{"train.stain_strokes": 1.0})
    image = np.zeros((2, 200, 200), np.float32)
    image[1, 150:190, 150:190] = 1.0  # a nucleus far from every stroke
    scribbles = np.zeros((200, 200, 2), np.uint8)
    for index in range(ENOUGH_CELL_STROKES - 1):
        scribbles[2 + 3 * (index // 20), 2 + 3 * (index % 20), 0] = 1  # one-pixel strokes, apart
    rng = np.random.default_rng(0)
    assert with_stain_strokes(scribbles, image, None, config, rng)[170, 170, 0] == 1
    scribbles[2 + 3 * 2, 2, 0] = 1  # one more stroke: enough
    assert np.array_equal(with_stain_strokes(scribbles, image, None, config, rng), scribbles)


def test_no_share_no_strokes_and_only_whole_cell_tasks_get_them():
    image, scribbles = two_stains(), np.zeros((40, 40, 2), np.uint8)
    off = tiny_config(**{"train.stain_strokes": 0.0})
    assert with_stain_strokes(scribbles, image, None, off, np.random.default_rng(0)) is scribbles
    # tissuenet: a cells task (cell, background) and a nuclei task (nucleus, background): only the first
    config = preset_config("quick", "tissuenet", **{"train.stain_strokes": 1.0})
    result = with_stain_strokes(np.zeros((40, 40, 4), np.uint8), image, None, config, np.random.default_rng(0))
    assert result[..., 0].any() and result[..., 1].any() and not result[..., 2:].any()
    vectra = preset_config("quick", "vectra", **{"train.stain_strokes": 1.0})
    blank = np.zeros((40, 40, vectra.n_scribble_channels), np.uint8)
    assert not with_stain_strokes(blank, image, None, vectra, np.random.default_rng(0)).any()


def test_bright_thickness_by_hand():
    assert bright_thickness(np.zeros((9, 9), bool)) == 0.0
    line = np.zeros((9, 9), bool)
    line[4, :] = True  # every pixel of a 1 px line is 1 px from the dark
    assert bright_thickness(line) == 1.0
    square = np.zeros((9, 9), bool)
    square[2:7, 2:7] = True  # distances 1 (16 pixels), 2 (8), 3 (1): the 90th percentile lies at 2
    assert bright_thickness(square) == 2.0


def test_the_share_must_be_a_fraction():
    with pytest.raises(InputError, match="stain_strokes"):
        tiny_config(**{"train.stain_strokes": 1.5})


def test_the_trainer_learns_from_the_automatic_strokes_the_same_ones_every_time(tmp_path, monkeypatch):
    config = tiny_config(**{"train.stain_strokes": 0.2})
    dataset = scribbled_images(config, seeds=(1,), fraction=0.2)
    trainer = Trainer(config, dataset, tmp_path / "run")
    calls = []
    monkeypatch.setattr(train, "run_stain_masks", lambda *args: calls.append(args) or run_stain_masks(*args))
    first, again = trainer._targets(0, dataset[0]), trainer._targets(0, dataset[0])
    assert np.array_equal(first, again)
    assert len(calls) == 1  # the masks are kept: live mode rebuilds the targets on every stroke
    assert (first.any(axis=-1) & ~dataset[0].scribbles.any(axis=-1)).sum() > 100
    off = Trainer(dataclasses.replace(config, train=dataclasses.replace(config.train, stain_strokes=0.0)),
                  dataset, tmp_path / "off")
    assert np.array_equal(off._targets(0, dataset[0]), dataset[0].scribbles)
