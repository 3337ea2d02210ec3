"""Automatic scribbles, validation box and scribble statistics on hand-made and synthetic label maps."""

import numpy as np
import pytest
from scipy import ndimage

from impartial.config import preset_config
from impartial.errors import InputError
from impartial.scribbles import (
    auto_scribbles,
    label_image_from_scribbles,
    scribble_counts,
    scribble_table,
    scribbles_from_label_image,
    sparse_scribbles,
    validation_box,
)
from impartial.synthetic import class_labels, make_tissue


def two_touching_squares() -> np.ndarray:
    """40 x 40: cell 1 at rows 5..19, cols 5..19 and cell 2 at rows 5..19, cols 20..34 share a border."""
    labels = np.zeros((40, 40), np.int32)
    labels[5:20, 5:20] = 1
    labels[5:20, 20:35] = 2
    return labels


def grid_of_cells(n: int = 10, cell: int = 6, pitch: int = 10) -> np.ndarray:
    """n x n separate square cells of side ``cell``, one every ``pitch`` px."""
    labels = np.zeros((n * pitch, n * pitch), np.int32)
    for index in range(n * n):
        row, col = divmod(index, n)
        labels[row * pitch + 2:row * pitch + 2 + cell, col * pitch + 2:col * pitch + 2 + cell] = index + 1
    return labels


def assert_strokes_in_place(scribbles: np.ndarray, truth: list[list[np.ndarray]]) -> None:
    """Every class stroke inside a cell of its class; every background stroke outside all cells of its task."""
    channel = 0
    for task in truth:
        for index, labels in enumerate(task):
            assert not np.any(scribbles[..., channel + index].astype(bool) & (labels == 0))
        cells = np.any([labels > 0 for labels in task], axis=0)
        assert not np.any(scribbles[..., channel + len(task)].astype(bool) & cells)
        channel += len(task) + 1


def test_touching_squares_get_separate_strokes_inside_each_cell():
    labels = two_touching_squares()
    scribbles, val_mask = auto_scribbles([[labels]], 1.0, seed=0)
    assert scribbles.shape == (40, 40, 2) and scribbles.dtype == np.uint8 and val_mask.dtype == bool
    assert set(np.unique(scribbles)) == {0, 1}
    foreground, background = scribbles[..., 0].astype(bool), scribbles[..., 1].astype(bool)
    assert_strokes_in_place(scribbles, [[labels]])
    assert set(np.unique(labels[foreground])) == {1, 2}
    # The 1-px erosion at the shared border keeps both border columns free and the strokes apart.
    assert not foreground[:, 19:21].any()
    near_cell_2 = ndimage.binary_dilation(foreground & (labels == 2), np.ones((3, 3), bool))
    assert not (near_cell_2 & foreground & (labels == 1)).any()
    # Ring 3 px inside cell 1's border: the outline of rows 7..17 x cols 7..16 (col 19 is eroded away).
    assert foreground[7, 7:17].all() and foreground[17, 7:17].all()
    assert foreground[7:18, 7].all() and foreground[7:18, 16].all()
    # Background stroke: a thin line in the 4-px band around the cells.
    distance_to_cells = ndimage.distance_transform_edt(labels == 0)
    assert background.any() and distance_to_cells[background].max() <= 4


def test_strokes_are_thin():
    labels = two_touching_squares()
    tissue = make_tissue(96, 96, seed=4)
    for truth in ([[labels]], [[tissue.cells]]):
        scribbles, _ = auto_scribbles(truth, 1.0, seed=0)
        for channel in range(scribbles.shape[-1]):
            # No stroke pixel has a full 3 x 3 neighbourhood of stroke pixels: at most 2 px wide.
            assert not ndimage.binary_erosion(scribbles[..., channel].astype(bool), np.ones((3, 3), bool)).any()
        cells = truth[0][0] > 0
        assert scribbles[..., 0].sum() < 0.4 * cells.sum()


def test_cell_cut_by_the_image_border_keeps_strokes_inside():
    labels = np.zeros((30, 30), np.int32)
    labels[:12, :12] = 1
    labels[10:30, 14:30] = 2
    scribbles, _ = auto_scribbles([[labels]], 1.0, seed=3, box=8)
    assert_strokes_in_place(scribbles, [[labels]])
    assert set(np.unique(labels[scribbles[..., 0] > 0])) == {1, 2}


@pytest.mark.parametrize(("tasks", "channels"), [("whole_cell", 2), ("vectra", 5), ("tissuenet", 4)])
def test_layout_follows_the_task_presets(tasks, channels):
    config = preset_config("quick", tasks)
    truth = class_labels(make_tissue(96, 96, seed=1), config)
    scribbles, val_mask = auto_scribbles(truth, 0.5, seed=2)
    assert scribbles.shape == (96, 96, channels) == (96, 96, config.n_scribble_channels)
    assert val_mask.shape == (96, 96)
    assert_strokes_in_place(scribbles, truth)
    background_channels = np.cumsum([task.n_scribble_channels for task in config.tasks]) - 1
    assert all(scribbles[..., channel].any() for channel in background_channels)
    assert scribbles[..., 0].any()


def test_fraction_of_cells_is_respected_exactly_when_boxes_hold_one_cell():
    labels = grid_of_cells()
    # An 8-px box around a 6-px cell reaches 1 px beyond it; neighbours are 4 px away.
    scribbles, _ = auto_scribbles([[labels]], 0.3, seed=5, box=8)
    assert np.count_nonzero(np.unique(labels[scribbles[..., 0] > 0])) == 30


def test_fraction_on_tissue_reaches_the_target_and_overshoots_by_at_most_one_box():
    tissue = make_tissue(128, 128, seed=2)
    n_cells = tissue.cells.max()
    scribbles, _ = auto_scribbles([[tissue.cells]], 0.25, seed=0)
    scribbled = np.count_nonzero(np.unique(tissue.cells[scribbles[..., 0] > 0]))
    assert round(0.25 * n_cells) <= scribbled <= round(0.25 * n_cells) + 20


def test_same_seed_same_scribbles_other_seed_other_scribbles():
    truth = [[make_tissue(96, 96, seed=3).cells]]
    first, first_box = auto_scribbles(truth, 0.3, seed=7)
    again, again_box = auto_scribbles(truth, 0.3, seed=7)
    other, _ = auto_scribbles(truth, 0.3, seed=8)
    assert np.array_equal(first, again) and np.array_equal(first_box, again_box)
    assert not np.array_equal(first, other)


def test_val_mask_is_the_validation_box_of_the_scribbles():
    truth = [[make_tissue(96, 96, seed=6).cells]]
    scribbles, val_mask = auto_scribbles(truth, 0.3, seed=1, val_fraction=0.25)
    assert np.array_equal(val_mask, validation_box(scribbles, 0.25))


def test_validation_box_size_and_placement_over_the_dense_cluster():
    scribbles = np.zeros((50, 80, 3), np.uint8)
    scribbles[30:40, 50:60, 0] = 1  # dense cluster
    scribbles[2, 2, 2] = scribbles[45, 5, 1] = 1  # lone strokes elsewhere
    box = validation_box(scribbles, 0.4)
    rows, cols = np.nonzero(box)
    assert box.sum() == 20 * 32
    # Every position holding the whole cluster ties; the top-left-most one wins.
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (20, 39, 28, 59)


def test_validation_box_rejects_bad_input():
    with pytest.raises(InputError):
        validation_box(np.zeros((10, 10), np.uint8))
    with pytest.raises(InputError):
        validation_box(np.zeros((10, 10, 2), np.uint8), 1.0)


def test_auto_scribbles_rejects_bad_input():
    labels = two_touching_squares()
    for bad_fraction in (0.0, 1.5):
        with pytest.raises(InputError):
            auto_scribbles([[labels]], bad_fraction)
    with pytest.raises(InputError, match="no cells"):
        auto_scribbles([[np.zeros((20, 20), np.int32)]], 0.5)
    with pytest.raises(InputError):
        auto_scribbles([[labels], [labels[:30]]], 0.5)
    with pytest.raises(InputError):
        auto_scribbles([[labels.astype(np.float32)]], 0.5)
    with pytest.raises(InputError):
        auto_scribbles([[]], 0.5)


def test_scribble_table_counts_cells_and_pixels():
    config = preset_config("quick", "tissuenet")
    labels = two_touching_squares()
    nuclei = np.where((labels > 0) & (np.indices(labels.shape)[0] < 10), labels, 0)  # 2 nuclei of 5 x 15 px
    scribbles = np.zeros((40, 40, 4), np.uint8)
    scribbles[10, 8:11, 0] = 1  # 3 px in cell 1
    scribbles[6, 25, 2] = 1  # 1 px in nucleus 2
    scribbles[30, 0:5, 3] = 1
    rows = scribble_table("img", scribbles, [[labels], [nuclei]], config)
    assert [(row["class"], row["labelled_cells"], row["scribbled_cells"]) for row in rows] == [
        ("cell", 2, 1), ("nucleus", 2, 1)]
    assert rows[0]["scribbled_pixels_pct"] == pytest.approx(100 * 3 / 450, abs=1e-3)
    assert rows[1]["scribbled_pixels_pct"] == pytest.approx(100 * 1 / 150, abs=1e-3)
    assert rows[0]["input_file"] == "img" and rows[1]["task"] == "nuclei"
    with pytest.raises(InputError):
        scribble_table("img", scribbles[..., :2], [[labels], [nuclei]], config)


def test_scribble_counts_per_class_and_background():
    config = preset_config("quick", "vectra")  # maps: cytoplasm, bg | nucleus in, nucleus out, bg
    scribbles = np.zeros((10, 10, 5), np.uint8)
    scribbles[0, :4, 0] = 1
    scribbles[1, :2, 2] = 1
    scribbles[2, :1, 3] = 1
    scribbles[5, :6, 1] = 1
    scribbles[5, 3:8, 4] = 1  # overlaps the first task's background on 3 px
    assert scribble_counts(scribbles, config) == {
        "cytoplasm": 4, "nucleus_in_cytoplasm": 2, "nucleus_out_of_cytoplasm": 1, "background": 8}
    with pytest.raises(InputError):
        scribble_counts(scribbles[..., :4], config)


def test_sparse_scribbles_draw_short_strokes_in_a_few_cells_and_a_little_background():
    # a 4 x 5 grid of touching 12 px squares with a background margin
    cells = np.zeros((70, 84), np.int32)
    for row in range(4):
        for col in range(5):
            cells[10 + 12 * row:22 + 12 * row, 12 + 12 * col:24 + 12 * col] = 1 + row * 5 + col
    scribbles, val_mask = sparse_scribbles(cells, n_cells=3, n_background=2, length=6, seed=1)
    assert scribbles.shape == (70, 84, 2) and val_mask.shape == (70, 84)
    strokes, n_strokes = ndimage.label(scribbles[..., 0], np.ones((3, 3)))
    assert n_strokes == 3
    for index in range(1, 4):
        inside = np.unique(cells[strokes == index])
        assert len(inside) == 1 and inside[0] > 0  # each stroke lies in one cell
        assert (strokes == index).sum() <= 6 + 1  # 3 steps each way from its middle
    assert len(np.unique(cells[scribbles[..., 0] > 0])) == 3  # three different cells
    background = scribbles[..., 1] > 0
    assert background.any() and not (cells[background] > 0).any()


def test_scribble_label_image_conversion_by_hand():
    label_image = np.array([[0, 1, 2, 3]], np.uint8)  # none, background, class 1, class 2
    scribbles = scribbles_from_label_image(label_image, n_classes=2)
    expected = np.array([[[0, 0, 0], [0, 0, 1], [1, 0, 0], [0, 1, 0]]], np.uint8)  # maps: class 1, class 2, bg
    np.testing.assert_array_equal(scribbles, expected)
    np.testing.assert_array_equal(label_image_from_scribbles(scribbles), label_image)
