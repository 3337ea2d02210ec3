"""Signs that a model has not learned the background yet, on hand-built probability, entropy and stroke maps."""

import numpy as np
import pytest

from impartial.config import RunConfig, tissuenet_tasks
from impartial.diagnostics import (
    MIN_SURE_FRACTION,
    findings,
    most_uncertain_place,
    prediction_findings,
)
from impartial.predict import Prediction, TaskPrediction

SIDE = 40


def learned() -> tuple[np.ndarray, np.ndarray]:
    """A model sure of itself: cells (left half) at 0.95, background (right half) at 0.05, low entropy."""
    foreground = np.full((SIDE, SIDE), 0.05, np.float32)
    foreground[:, : SIDE // 2] = 0.95
    return foreground, np.full((SIDE, SIDE), 0.2, np.float32)


def strokes(rows: slice, cols: slice) -> np.ndarray:
    mask = np.zeros((SIDE, SIDE), bool)
    mask[rows, cols] = True
    return mask


def kinds(found) -> list[str]:
    return [finding.kind for finding in found]


def test_a_model_that_separates_cells_from_background_has_no_findings():
    foreground, entropy = learned()
    cells, background = strokes(slice(5, 8), slice(2, 15)), strokes(slice(5, 8), slice(25, 38))
    assert findings(foreground, entropy, cells, background, held_out=np.ones((SIDE, SIDE), bool)) == []


def test_an_untrained_model_is_unsure_everywhere_and_says_where_to_scribble():
    foreground = np.full((SIDE, SIDE), 0.5, np.float32)
    entropy = np.full((SIDE, SIDE), 0.9, np.float32)
    entropy[16:32, 0:16] = 1.0  # the most uncertain 16 x 16 block: rows 16-31, columns 0-15
    found = findings(foreground, entropy)
    assert kinds(found) == ["no_sure_background", "no_sure_cells", "uncertain"]
    background, cells, uncertain = found
    assert "not yet learned the background" in background.message and "background strokes" in background.suggestion
    assert "never low" in cells.message and "cell strokes" in cells.suggestion
    assert background.value == cells.value == 0.0
    assert uncertain.value == 1.0 and "100%" in uncertain.message
    assert uncertain.where == (24, 8)
    assert "x 8, y 24" in uncertain.suggestion


def test_a_model_calling_everything_cell_has_not_learned_the_background():
    foreground = np.full((SIDE, SIDE), 0.9, np.float32)
    found = findings(foreground, np.full((SIDE, SIDE), 0.5, np.float32))
    assert kinds(found) == ["no_sure_background"]


def test_sure_background_on_a_few_pixels_counts_from_one_percent():
    foreground = np.full((100, 100), 0.9, np.float32)
    entropy = np.zeros((100, 100), np.float32)
    assert MIN_SURE_FRACTION == 0.01
    foreground.flat[:100] = 0.2  # exactly 1 %: surely background (<= 1 - 0.8)
    assert findings(foreground, entropy) == []
    foreground.flat[99] = 0.21  # 0.99 %, and 0.21 is not sure
    assert kinds(findings(foreground, entropy)) == ["no_sure_background"]


def test_high_entropy_on_half_the_image_is_not_most_of_it():
    foreground, entropy = learned()
    entropy[: SIDE // 2] = 0.8  # exactly half at the high mark
    assert findings(foreground, entropy) == []
    entropy[SIDE // 2, 0] = 0.8  # one pixel more
    assert kinds(findings(foreground, entropy)) == ["uncertain"]


def test_held_out_background_strokes_read_as_cell_are_reported_with_their_place():
    foreground, entropy = learned()
    held_out = strokes(slice(20, 40), slice(0, SIDE))  # the bottom half is the validation box
    background = strokes(slice(30, 31), slice(4, 15))  # on the cell side: read as cell
    outside = strokes(slice(2, 3), slice(4, 14))  # also read as cell, but trained on: not checked
    found = findings(foreground, entropy, None, background | outside, held_out)
    assert kinds(found) == ["held_out_background_missed"]
    assert found[0].value == 1.0
    assert found[0].where == (30, 9)
    assert "held-out background strokes as cell" in found[0].message
    assert "outside the validation box" in found[0].suggestion
    assert findings(foreground, entropy, None, outside, held_out) == []


def test_held_out_cell_strokes_follow_the_threshold_and_need_a_majority_missed():
    foreground, entropy = learned()
    foreground[:, : SIDE // 2] = 0.6
    foreground[:4, : SIDE // 2] = 0.9  # the model is sure of a few cells
    cells = strokes(slice(10, 12), slice(2, 12))  # 20 pixels at 0.6
    assert findings(foreground, entropy, cells, None, threshold=0.5) == []
    found = findings(foreground, entropy, cells, None, threshold=0.7)
    assert kinds(found) == ["held_out_cells_missed"]
    assert "cell strokes as background" in found[0].message and "held-out" not in found[0].message
    foreground[10, 2:12] = 0.9  # half the stroke pixels are now read as cell: not more than half missed
    assert findings(foreground, entropy, cells, None, threshold=0.7) == []
    foreground[10, 2] = 0.6
    assert kinds(findings(foreground, entropy, cells, None, threshold=0.7)) == ["held_out_cells_missed"]


def test_maps_of_different_shapes_are_refused():
    foreground, entropy = learned()
    with pytest.raises(ValueError, match="same"):
        findings(foreground, entropy[:-1])
    with pytest.raises(ValueError, match="shape"):
        findings(foreground, entropy, strokes(slice(0, 1), slice(0, 1))[:-1])


def test_the_most_uncertain_place_is_the_centre_of_the_brightest_block():
    entropy = np.zeros((64, 96), np.float32)
    entropy[40:48, 72:80] = 1.0  # inside the 16 x 16 block at rows 32-47, columns 64-79
    assert most_uncertain_place(entropy) == (40, 72)
    assert most_uncertain_place(np.zeros((8, 8), np.float32)) == (4, 4)  # smaller than a block: the whole image


def test_prediction_findings_read_each_tasks_strokes_from_its_own_channels():
    config = RunConfig(tasks=tissuenet_tasks())  # cells: [cell, background], nuclei: [nucleus, background]
    foreground, entropy = learned()
    tasks = [TaskPrediction(task.name, task.classes, foreground[None], np.zeros((1, SIDE, SIDE), np.float32),
                            entropy) for task in config.tasks]
    scribbles = np.zeros((SIDE, SIDE, 4), np.uint8)
    scribbles[5:8, 25:38, 2] = 1  # a nucleus stroke on the background side of the nuclei task
    scribbles[5:8, 2:15, 0] = 1  # a cell stroke on the cell side of the cells task
    everywhere = np.ones((SIDE, SIDE), bool)
    found = prediction_findings(Prediction(tasks), config, scribbles, everywhere)
    assert kinds(found) == ["held_out_cells_missed"]
    assert found[0].message.startswith(f"{config.tasks[1].name}: ")
    assert found[0].where == (6, 31)
    assert prediction_findings(Prediction(tasks), config) == []  # no strokes: only the maps are read


def test_without_a_stored_validation_box_the_training_box_is_checked():
    config = RunConfig()  # one task: cell, background
    foreground, entropy = learned()
    scribbles = np.zeros((SIDE, SIDE, 2), np.uint8)
    scribbles[30:33, 25:38, 0] = 1  # cell strokes read as background, inside the box training would hold out
    task = TaskPrediction("cells", ["cell"], foreground[None], np.zeros((1, SIDE, SIDE), np.float32), entropy)
    found = prediction_findings(Prediction([task]), config, scribbles)
    assert kinds(found) == ["held_out_cells_missed"]
    assert "held-out" in found[0].message
    elsewhere = np.zeros((SIDE, SIDE), bool)  # a stored box without these strokes: nothing held out is missed
    assert prediction_findings(Prediction([task]), config, scribbles, elsewhere) == []
