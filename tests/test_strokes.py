"""Strokes as changes: rasterising, painting, merging edits from several users, undo and redo."""

import threading

import numpy as np
import pytest

from impartial.config import TaskConfig
from impartial.demo import create_demo_project
from impartial.errors import InputError
from impartial.strokes import Stroke, painted_values, stroke_pixels

CELL, BACKGROUND = 0, 1  # scribble channels of the demo project's one task
TWO_TASKS = [TaskConfig("cells", ["cell"], [0], [1, 1]), TaskConfig("nuclei", ["nucleus"], [1], [1, 1])]


def pixels(stroke: Stroke, shape=(12, 12)) -> set[tuple[int, int]]:
    return set(zip(*(axis.tolist() for axis in stroke_pixels(stroke, shape)), strict=True))


def test_a_round_brush_covers_the_pixels_whose_centres_are_within_its_radius():
    # centre (4.5, 4.5), radius 1.5: the 3x3 block (corners at 1.41) and nothing 2 away
    assert pixels(Stroke(((4.5, 4.5),), 3.0, CELL)) == {(r, c) for r in (3, 4, 5) for c in (3, 4, 5)}
    # a 1-px line through pixel centres covers exactly its row
    assert pixels(Stroke(((2.5, 1.5), (2.5, 5.5)), 1.0, CELL)) == {(2, c) for c in range(1, 6)}


def test_a_click_on_a_pixel_corner_still_paints_the_pixel_under_it():
    assert pixels(Stroke(((3.0, 3.0),), 1.0, CELL)) == {(3, 3)}


def test_strokes_are_clipped_to_the_image():
    assert pixels(Stroke(((0.5, 0.5),), 3.0, CELL), shape=(2, 2)) == {(0, 0), (0, 1), (1, 0), (1, 1)}
    assert pixels(Stroke(((-9.0, -9.0),), 3.0, CELL)) == set()


def test_painting_sets_the_class_within_its_task_and_the_eraser_clears_everything():
    before = np.array([[0, 1, 1, 0]], np.uint8)  # background of task 1, nucleus of task 2
    np.testing.assert_array_equal(painted_values(before, 0, TWO_TASKS), [[1, 0, 1, 0]])
    np.testing.assert_array_equal(painted_values(before, 3, TWO_TASKS), [[0, 1, 0, 1]])
    np.testing.assert_array_equal(painted_values(before, None, TWO_TASKS), [[0, 0, 0, 0]])
    with pytest.raises(InputError, match="channel 4"):
        painted_values(before, 4, TWO_TASKS)


@pytest.fixture
def project(tmp_path):
    """A one-image project without scribbles."""
    project = create_demo_project(tmp_path, n_images=1, size=32)
    name = project.images()[0]
    project.save_scribbles(name, np.zeros_like(project.load_scribbles(name)))
    return project


def row_stroke(row: int, channel: int | None = CELL) -> Stroke:
    return Stroke(((row + 0.5, 2.5), (row + 0.5, 9.5)), 1.0, channel)


def painted_rows(project, channel: int = CELL) -> list[int]:
    scribbles = project.load_scribbles(project.images()[0])
    return sorted(set(np.nonzero(scribbles[..., channel])[0].tolist()))


def test_strokes_from_two_users_both_land(project):
    name = project.images()[0]
    assert project.draw_stroke(name, row_stroke(3), "ann", "op-1")
    assert project.draw_stroke(name, row_stroke(7), "bob", "op-2")  # bob never saw ann's stroke
    assert painted_rows(project) == [3, 7]


def test_an_edit_that_arrives_twice_is_applied_once(project):
    name = project.images()[0]
    project.draw_stroke(name, row_stroke(3), "ann", "op-1")
    project.draw_stroke(name, row_stroke(5), "ann", "op-2")
    assert project.undo_stroke(name, "ann", "undo-1")
    assert not project.undo_stroke(name, "ann", "undo-1")  # a retried request
    assert painted_rows(project) == [3]
    assert not project.draw_stroke(name, row_stroke(3, BACKGROUND), "ann", "op-1")
    assert painted_rows(project, BACKGROUND) == []


def test_undo_restores_only_what_nobody_painted_over_since(project):
    name = project.images()[0]
    project.draw_stroke(name, row_stroke(3), "ann", "a1")
    crossing = Stroke(((0.5, 5.5), (9.5, 5.5)), 1.0, BACKGROUND)  # bob's vertical stroke crosses row 3
    project.draw_stroke(name, crossing, "bob", "b1")
    assert project.undo_stroke(name, "ann", "a2")
    scribbles = project.load_scribbles(name)
    assert not scribbles[..., CELL].any()
    assert scribbles[3, 5, BACKGROUND] == 1 and scribbles[:10, 5, BACKGROUND].all()


def test_undo_and_redo_walk_the_users_own_edits_in_order(project):
    name = project.images()[0]
    for step, row in enumerate((2, 4, 6)):
        project.draw_stroke(name, row_stroke(row), "ann", f"a{step}")
    project.draw_stroke(name, row_stroke(8), "bob", "b0")
    project.undo_stroke(name, "ann", "u1")
    project.undo_stroke(name, "ann", "u2")
    assert painted_rows(project) == [2, 8]
    assert project.history(name).count("ann") == (1, 2)
    project.redo_stroke(name, "ann", "r1")
    assert painted_rows(project) == [2, 4, 8]
    project.draw_stroke(name, row_stroke(10), "ann", "a3")  # a new stroke ends the redo chain
    assert not project.redo_stroke(name, "ann", "r2")
    assert painted_rows(project) == [2, 4, 8, 10]
    assert project.history(name).count("bob") == (1, 0)


def test_an_eraser_stroke_is_undone_like_any_other(project):
    name = project.images()[0]
    project.draw_stroke(name, row_stroke(4), "ann", "a1")
    project.draw_stroke(name, Stroke(((4.5, 5.5),), 3.0, None), "ann", "a2")
    assert painted_rows(project) == [4]
    assert project.load_scribbles(name)[4, 4:7, CELL].sum() == 0
    project.undo_stroke(name, "ann", "a3")
    assert project.load_scribbles(name)[4, 2:10, CELL].all()


def test_clear_is_an_edit_its_user_can_undo(project):
    name = project.images()[0]
    project.draw_stroke(name, row_stroke(4), "ann", "a1")
    project.save_scribbles(name, np.zeros_like(project.load_scribbles(name)), user="ann")
    assert painted_rows(project) == []
    project.undo_stroke(name, "ann", "a2")
    assert painted_rows(project) == [4]


def test_concurrent_strokes_on_one_image_all_land(project):
    name = project.images()[0]
    rows = list(range(2, 26, 3))
    threads = [threading.Thread(target=project.draw_stroke, args=(name, row_stroke(row), f"user{row}", f"op{row}"))
               for row in rows]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert painted_rows(project) == rows


def test_the_validation_box_survives_strokes(project):
    name = project.images()[0]
    box = np.zeros(project.image_shape(name), bool)
    box[:8, :8] = True
    project.save_scribbles(name, project.load_scribbles(name), val_mask=box)
    project.draw_stroke(name, row_stroke(12), "ann", "a1")
    np.testing.assert_array_equal(project.load_val_mask(name), box)
