"""Probabilities to instances on hand-made maps: touching squares, small objects, class combinations."""

import dataclasses
import time

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.measure import label
from skimage.morphology import h_maxima
from skimage.segmentation import watershed

from impartial import instances
from impartial.config import InstanceConfig
from impartial.errors import InputError
from impartial.instances import (
    _NUCLEUS_NECK,
    _largest_pieces,
    _split_touching,
    choose_threshold,
    combine_class_probabilities,
    instances_from_probabilities,
    stained,
    threshold_instances,
    watershed_instances,
)
from impartial.metrics import match_instances

SHAPE = (40, 60)


@pytest.fixture
def touching_squares():
    """Two 20 x 20 squares sharing an edge, a cell probability high over both, nuclei at their centres."""
    squares = np.zeros(SHAPE, np.int32)
    squares[10:30, 10:30], squares[10:30, 30:50] = 1, 2
    cell_prob = np.where(squares > 0, 0.9, 0.05)
    nucleus_prob = np.zeros(SHAPE)
    nucleus_prob[16:24, 16:24] = nucleus_prob[16:24, 36:44] = 0.9
    return squares, cell_prob, nucleus_prob


def assert_separated(squares: np.ndarray, cells: np.ndarray) -> None:
    assert cells.dtype == np.int32 and cells.max() == 2
    iou = match_instances(squares, cells).toarray()
    assert iou.max(axis=1).min() > 0.8


def test_threshold_merges_touching_squares(touching_squares):
    squares, cell_prob, _ = touching_squares
    cells = threshold_instances(cell_prob, 0.5, grow=0)
    assert cells.dtype == np.int32 and cells.max() == 1
    assert np.array_equal(cells > 0, squares > 0)


def test_watershed_separates_touching_squares_from_nucleus_probability(touching_squares):
    squares, cell_prob, nucleus_prob = touching_squares
    config = InstanceConfig(membrane_channel=None, nuclear_channel=None)
    cells, nuclei = watershed_instances(cell_prob, nucleus_prob, None, config)
    assert_separated(squares, cells)
    # Each nucleus carries the id of the cell around it.
    assert set(np.unique(nuclei[16:24, 16:24])) == {cells[20, 20]}
    assert set(np.unique(nuclei[16:24, 36:44])) == {cells[20, 40]}
    assert np.count_nonzero(nuclei) == 2 * 64


def test_watershed_seeds_from_the_nuclear_channel_and_follows_the_membrane(touching_squares):
    squares, cell_prob, nucleus_prob = touching_squares
    membrane = np.zeros(SHAPE)
    membrane[10:30, 29:31] = 1.0  # a stained border between the squares
    image = np.stack([membrane, nucleus_prob]).astype(np.float32)
    cells, nuclei = watershed_instances(cell_prob, None, image, InstanceConfig(grow=0))
    assert_separated(squares, cells)
    assert nuclei is not None and set(np.unique(nuclei)) == {0, 1, 2}


def test_a_stain_that_fills_cells_draws_the_border_along_its_dark_line(touching_squares):
    # Cytoplasm bright in both squares but for the 2 px line where they meet; the left nucleus lies near that
    # line, so taken as a membrane the stain leaves the split about halfway between the nuclei, in the right square.
    squares, cell_prob, _ = touching_squares
    cytoplasm = (squares > 0).astype(np.float32)
    cytoplasm[:, 29:31] = 0.0
    nuclear = np.zeros(SHAPE, np.float32)
    nuclear[16:24, 22:27] = nuclear[16:24, 36:44] = 1.0
    image = np.stack([cytoplasm, nuclear])
    config = InstanceConfig(membrane_channel=0, membrane_fills_cells=True, grow=0)
    cells, _ = watershed_instances(cell_prob, None, image, config)
    assert_separated(squares, cells)
    assert len(np.unique(cells[10:30, 10:29])) == 1 and len(np.unique(cells[10:30, 31:50])) == 1
    as_membrane, _ = watershed_instances(cell_prob, None, image, InstanceConfig(membrane_channel=0, grow=0))
    assert set(np.unique(as_membrane[20, 31:50])) == {1, 2}


def stained_and_dark_cells() -> tuple[np.ndarray, np.ndarray]:
    """A bright and a dim (0.3) cytoplasm square 4 px apart, nuclei at their centres, and a cell probability that
    covers the dark gap between them too, as a network's spills there on unseen tissue."""
    cytoplasm, nuclear = np.zeros(SHAPE, np.float32), np.zeros(SHAPE, np.float32)
    cytoplasm[10:30, 10:28], cytoplasm[10:30, 32:50] = 1.0, 0.3
    nuclear[16:24, 15:23] = nuclear[16:24, 37:45] = 1.0
    cell_prob = np.full(SHAPE, 0.05, np.float32)
    cell_prob[10:30, 10:50] = 0.9
    return np.stack([cytoplasm, nuclear]), cell_prob


def test_stained_pixels_reach_the_dim_cell_but_not_the_dark_gap():
    # Li's level of the smoothed cytoplasm is 0.13, the gate 0.6 times that: the dim square's 0.3 passes, the
    # smoothing carries the bright square's edge 2 px out, and the gap's middle stays dark.
    image, _ = stained_and_dark_cells()
    shown = stained(image, InstanceConfig())
    assert shown[20, 10:28].all() and shown[20, 32:50].all()
    assert not shown[20, 29:31].any() and not shown[:5].any() and not shown[20, 53:].any()
    blank = np.zeros_like(image)
    assert not stained(blank, InstanceConfig()).any()  # a blank channel shows nothing
    assert stained(image[:1], InstanceConfig(membrane_channel=None)).all()  # no named channel in the image


def test_cells_kept_to_the_stains_leave_the_dark_gap_out():
    image, cell_prob = stained_and_dark_cells()
    config = InstanceConfig(membrane_fills_cells=True, grow=0)
    spilled, _ = watershed_instances(cell_prob, None, image, config)
    assert (spilled[20, 28:32] > 0).all()
    kept, _ = watershed_instances(cell_prob, None, image, dataclasses.replace(config, cells_show_stain=True))
    assert kept.max() == 2 and not kept[20, 29:31].any()
    assert (kept[20, 12:27] == kept[20, 15]).all() and (kept[20, 33:49] == kept[20, 40]).all()


def cell_in_dim_rim(inside: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """A bright cytoplasm square (its inner part at ``inside``) with a nucleus, in a 3 px rim at 0.4 that the cell
    probability covers too, as a network spills into the dim tissue around a cell."""
    cytoplasm, nuclear = np.zeros(SHAPE, np.float32), np.zeros(SHAPE, np.float32)
    cytoplasm[7:33, 7:33] = 0.4
    cytoplasm[10:30, 10:30] = 1.0
    cytoplasm[14:26, 14:26] = inside
    nuclear[17:23, 17:23] = 1.0
    cell_prob = np.full(SHAPE, 0.05, np.float32)
    cell_prob[7:33, 7:33] = 0.9
    return np.stack([cytoplasm, nuclear]), cell_prob


def test_a_cell_kept_to_the_stains_sheds_the_rim_much_dimmer_than_itself():
    # The rim passes the whole image's stain level, but its stain (0.4 + 0) is below 0.6 of the cell's mean
    # ((400 + 0.4 * 276 + 36) / 676 + ... = 0.81 -> 0.49): it is trimmed, the square kept, the nucleus with it.
    image, cell_prob = cell_in_dim_rim()
    config = InstanceConfig(membrane_fills_cells=True, grow=0, cells_show_stain=True)
    assert stained(image, config)[8, 20] and stained(image, config)[20, 31]
    spilled, _ = watershed_instances(cell_prob, None, image, dataclasses.replace(config, cells_show_stain=False))
    assert spilled[8, 20] == spilled[20, 20] == 1
    cells, nuclei = watershed_instances(cell_prob, None, image, config)
    assert cells.max() == 1 and (cells[11:29, 11:29] == 1).all()
    assert not cells[7:9].any() and not cells[:, 31:].any() and not cells[20, 7:9].any()
    assert nuclei[20, 20] == 1 and np.all((nuclei == 0) | (nuclei == cells))


def test_a_dim_part_that_the_cell_encloses_stays_in_the_cell():
    # The square's middle (0.2, away from the nucleus) passes the whole image's stain level but 40 of its pixels
    # lie below 0.6 of the cell's mean stain; the cell surrounds them: a hole, not a spill, so they stay (a
    # cytoplasm dimmer than what lies around it).
    image, cell_prob = cell_in_dim_rim(inside=0.2)
    config = InstanceConfig(membrane_fills_cells=True, grow=0, cells_show_stain=True)
    assert stained(image, config)[14:26, 14:26].all()
    cells, _ = watershed_instances(cell_prob, None, image, config)
    assert (cells[11:29, 11:29] == 1).all()


def test_a_cell_cut_in_two_keeps_its_larger_piece():
    cells = np.array([[1, 1, 0, 1, 2],
                      [1, 1, 0, 0, 2],
                      [0, 0, 0, 3, 3]], np.int32)
    assert _largest_pieces(cells).tolist() == [[1, 1, 0, 0, 2], [1, 1, 0, 0, 2], [0, 0, 0, 3, 3]]
    assert _largest_pieces(cells[:, 3:]).tolist() == [[1, 2], [0, 2], [3, 3]]  # every cell in one piece


def test_a_cell_without_a_nucleus_gets_a_seed_of_its_own(touching_squares):
    # The right square's nucleus lies outside the section; the probability dips below 0.5 where the squares meet.
    squares, cell_prob, nucleus_prob = touching_squares
    cell_prob = cell_prob.copy()
    cell_prob[10:30, 29:31] = 0.4
    nucleus_prob[:, 30:] = 0.0
    image = np.stack([np.zeros(SHAPE), nucleus_prob]).astype(np.float32)
    config = InstanceConfig(threshold=0.3, membrane_channel=None, grow=0)
    cells, nuclei = watershed_instances(cell_prob, None, image, config)
    assert_separated(squares, cells)
    assert set(np.unique(nuclei)) == {0, cells[20, 20]}  # only the left cell has a nucleus


def test_a_dim_nucleus_beside_a_bright_one_still_seeds_its_cell(touching_squares):
    # Epithelial nuclei are often dimmer than lymphocytes' in the same section: an Otsu level of the nuclear
    # stain (0.30 here) falls between the two and leaves the dim nucleus without a seed; Li's level (0.11) keeps it.
    squares, cell_prob, nucleus_prob = touching_squares
    nuclear = nucleus_prob / 0.9
    nuclear[:, 30:] *= 0.2
    image = np.stack([np.zeros(SHAPE), nuclear]).astype(np.float32)
    cells, nuclei = watershed_instances(cell_prob, None, image, InstanceConfig(membrane_channel=None, grow=0))
    assert_separated(squares, cells)
    assert set(np.unique(nuclei)) == {0, 1, 2}  # both nuclei found, each in its own cell


def test_a_small_nucleus_pressed_against_a_larger_one_is_a_seed_of_its_own():
    # Discs of radius 6 and 7, centres 10 px apart: the smoothed distance transform dips by less than a pixel at
    # the neck, which a 1 px peak height missed (one seed for two nuclei, so one cell for two).
    rows, cols = np.mgrid[: SHAPE[0], : SHAPE[1]]
    small, large = (rows - 20) ** 2 + (cols - 20) ** 2 < 36, (rows - 20) ** 2 + (cols - 30) ** 2 < 49
    cell_prob = np.where(np.hypot(rows - 20, cols - 25) < 16, 0.9, 0.05)
    image = np.stack([np.zeros(SHAPE), (small | large).astype(float)]).astype(np.float32)
    cells, nuclei = watershed_instances(cell_prob, None, image, InstanceConfig(membrane_channel=None, grow=0))
    assert cells.max() == 2
    assert cells[20, 18] != cells[20, 32] and nuclei[20, 18] == cells[20, 18] and nuclei[20, 32] == cells[20, 32]


def test_nuclei_split_group_by_group_as_over_the_whole_image():
    # Random discs, many touching, some cut by the image's edge, one filling its corner: each group of nearby
    # blobs is split in its own crop, and the labels must equal one h-maxima and one watershed over the image.
    rng = np.random.default_rng(3)
    rows, cols = np.mgrid[:120, :150]
    blobs = np.zeros((120, 150), bool)
    for row, col, radius in zip(rng.integers(-4, 124, 40), rng.integers(-4, 154, 40), rng.uniform(2, 9, 40),
                                strict=True):
        blobs |= (rows - row) ** 2 + (cols - col) ** 2 < radius ** 2
    blobs[:12, :12] = True
    distance = ndi.gaussian_filter(ndi.distance_transform_edt(blobs).astype(np.float32), 1.0)
    whole = watershed(-distance, markers=label(h_maxima(distance, _NUCLEUS_NECK) & blobs, connectivity=2),
                      mask=blobs)
    assert whole.max() > label(blobs).max()  # touching discs were split at their necks
    np.testing.assert_array_equal(_split_touching(blobs), whole)


def test_compact_watershed_stops_halfway_where_no_border_shows():
    # One 20 x 40 block of two cells whose probability falls from left to right without a dip between them.
    block = np.zeros(SHAPE, bool)
    block[10:30, 10:50] = True
    cell_prob = np.where(block, np.interp(np.arange(SHAPE[1]), [10, 50], [0.95, 0.6])[np.newaxis, :], 0.05)
    nuclear = np.zeros(SHAPE)
    nuclear[16:24, 16:24] = nuclear[16:24, 36:44] = 1.0
    image = np.stack([np.zeros(SHAPE), nuclear]).astype(np.float32)
    areas = {compactness: np.bincount(watershed_instances(
        cell_prob, None, image, InstanceConfig(membrane_channel=None, grow=0, compactness=compactness))[0].ravel())
        for compactness in (0.0, 0.04)}
    assert list(areas[0.0]) == [1600, 652, 148]  # plain flooding: the brighter cell takes most of the block
    assert list(areas[0.04]) == [1600, 400, 400]


def test_watershed_splits_at_distance_peaks_without_nuclei():
    rows, cols = np.mgrid[: SHAPE[0], : SHAPE[1]]
    discs = np.zeros(SHAPE, np.int32)
    discs[(rows - 20) ** 2 + (cols - 20) ** 2 < 100] = 1
    discs[(rows - 20) ** 2 + (cols - 37) ** 2 < 100] = 2  # overlaps the first: one blob with a waist
    config = InstanceConfig(membrane_channel=None, nuclear_channel=None, grow=0)
    cells, nuclei = watershed_instances(np.where(discs > 0, 0.9, 0.0), None, None, config)
    assert nuclei is None
    assert_separated(discs, cells)


def test_small_objects_are_removed_and_ids_stay_consecutive():
    cell_prob = np.zeros((12, 12))
    cell_prob[0:2, 0:2] = 0.9  # 4 px: too small
    cell_prob[5:8, 5:8] = 0.9  # 9 px
    cells = threshold_instances(cell_prob, 0.5, min_size=5, grow=0)
    assert np.unique(cells).tolist() == [0, 1]
    assert np.count_nonzero(cells) == 9
    grown = threshold_instances(cell_prob, 0.5, min_size=5, grow=1)
    assert np.count_nonzero(grown) == 9 + 4 * 3  # expand_labels grows by Euclidean distance 1: no corners


def test_a_nucleus_without_cytoplasm_is_a_small_cell_of_its_own(touching_squares):
    squares, cell_prob, nucleus_prob = touching_squares
    nucleus_prob[32:36, 2:6] = 0.9  # outside every cell
    config = InstanceConfig(membrane_channel=None, nuclear_channel=None, grow=0)
    cells, nuclei = watershed_instances(cell_prob, nucleus_prob, None, config)
    lone = cells[32:36, 2:6]
    assert cells.max() == 3 and np.all(lone == lone[0, 0]) and np.count_nonzero(cells == lone[0, 0]) == 16
    assert np.array_equal(nuclei[32:36, 2:6], lone)


def test_dispatch_on_the_method(touching_squares):
    squares, cell_prob, nucleus_prob = touching_squares
    cells, nuclei = instances_from_probabilities(cell_prob, nucleus_prob, None,
                                                 InstanceConfig(method="threshold", grow=0))
    assert cells.max() == 1 and set(np.unique(nuclei)) == {0, 1}
    cells, _ = instances_from_probabilities(cell_prob, nucleus_prob, None, InstanceConfig(nuclear_channel=None,
                                                                                          membrane_channel=None))
    assert cells.max() == 2
    with pytest.raises(InputError):
        instances_from_probabilities(cell_prob, None, None, InstanceConfig(method="magic"))
    with pytest.raises(InputError):  # nuclear channel 1 of a one-channel image
        watershed_instances(cell_prob, None, cell_prob[None].astype(np.float32), InstanceConfig(membrane_channel=None))


def test_combine_vectra_classes():
    cytoplasm = np.array([[0.6, 0.1]])
    inside = np.array([[0.5, 0.2]])
    outside = np.array([[0.0, 0.3]])
    cell, nucleus = combine_class_probabilities(
        {"cytoplasm": cytoplasm, "nucleus_in_cytoplasm": inside, "nucleus_out_of_cytoplasm": outside})
    np.testing.assert_allclose(cell, [[1.0, 0.6]])
    np.testing.assert_allclose(nucleus, [[0.5, 0.5]])
    assert cell.dtype == nucleus.dtype == np.float32


def test_combine_named_cell_and_nucleus_classes():
    cell_map, nucleus_map = np.full((2, 2), 0.7), np.full((2, 2), 0.2)
    cell, nucleus = combine_class_probabilities({"cell": cell_map, "nucleus": nucleus_map, "other": cell_map})
    np.testing.assert_allclose(cell, cell_map)
    np.testing.assert_allclose(nucleus, nucleus_map)
    cell, nucleus = combine_class_probabilities({"cell": cell_map})
    assert nucleus is None
    cell, nucleus = combine_class_probabilities({"nucleus": nucleus_map})  # nuclei-only run: nuclei are the objects
    np.testing.assert_allclose(cell, nucleus_map)
    with pytest.raises(InputError):
        combine_class_probabilities({"tumour": cell_map})


def test_choose_threshold_separates_the_scribbles():
    probability = np.array([0.7, 0.8, 0.9, 0.1, 0.2, 0.3, 0.6])
    positive = np.array([1, 1, 1, 0, 0, 0, 0], bool)
    # Perfect separation for 0.6 <= t < 0.7: the candidates 0.6 and 0.65 tie, 0.6 is closer to 0.5.
    assert choose_threshold(probability, positive, ~positive) == pytest.approx(0.6)


def test_choose_threshold_balances_unequal_scribbles():
    # 4 positives at 0.6; 100 negatives at 0.2 and 10 at 0.7. Plain accuracy is best (110 / 114) for t >= 0.7,
    # calling every positive negative; balanced accuracy is best (0.95) for 0.2 <= t < 0.6, and 0.5 is nearest 0.5.
    probability = np.concatenate([np.full(4, 0.6), np.full(100, 0.2), np.full(10, 0.7)])
    positive = np.arange(114) < 4
    assert choose_threshold(probability, positive, ~positive) == pytest.approx(0.5)
    with pytest.raises(InputError):
        choose_threshold(probability, positive, np.zeros(114, bool))


def test_choose_threshold_treats_a_difference_within_a_few_strokes_noise_as_a_tie():
    # 10 positive pixels at 0.97; 19 negative pixels at 0.1 and one at 0.9. Only t >= 0.9 separates them all
    # (balanced accuracy 1); from 0.1 to 0.85 one negative pixel in 20 is above t: (1 + 0.95) / 2 = 0.975.
    probability = np.concatenate([np.full(10, 0.97), np.full(19, 0.1), [0.9]])
    positive = np.arange(30) < 10
    assert choose_threshold(probability, positive, ~positive) == pytest.approx(0.9)
    # Two strokes a side: at 0.5 the error is sqrt(0.95 * 0.05 / 2) / 2 = 0.077 > 1 - 0.975, a tie, nearest 0.5.
    assert choose_threshold(probability, positive, ~positive, strokes=(2, 2)) == pytest.approx(0.5)
    # 400 negative strokes: the error is sqrt(0.95 * 0.05 / 400) / 2 = 0.0054 < 0.025, so 0.9 stays best.
    assert choose_threshold(probability, positive, ~positive, strokes=(10, 400)) == pytest.approx(0.9)


def test_calibration_counts_the_held_out_strokes():
    from impartial.calibrate import _threshold_over

    # the pixels above drawn as one positive stroke and three negative ones: 0.5 is within their noise
    probability, positive, negative = np.zeros((8, 8)), np.zeros((8, 8), bool), np.zeros((8, 8), bool)
    positive[0, :8], positive[1, :2] = True, True
    negative[3, :8], negative[4, :8], negative[6, :3], negative[6, 7] = True, True, True, True
    probability[positive], probability[negative], probability[6, 7] = 0.97, 0.1, 0.9
    assert _threshold_over([(probability, positive, negative)], default=0.3) == pytest.approx(0.5)
    # 40 negative pixels apart from each other are 40 strokes, two of them at 0.9: the error at 0.5,
    # sqrt(0.95 * 0.05 / 40) / 2 = 0.017, is below the difference 0.025, so 0.9 stays best
    probability, positive, negative = np.zeros((20, 10)), np.zeros((20, 10), bool), np.zeros((20, 10), bool)
    positive[0] = True
    negative[4::2, ::2] = True
    probability[positive], probability[negative], probability[4, :4:2] = 0.97, 0.1, 0.9
    assert _threshold_over([(probability, positive, negative)], default=0.3) == pytest.approx(0.9)


@pytest.mark.parametrize("nuclei_from", ["probability", "channel"])
def test_large_images_go_window_by_window_like_the_whole_image(nuclei_from):
    from impartial.io import normalize_percentile
    from impartial.synthetic import make_tissue

    tissue = make_tissue(300, 260, seed=3)
    image = normalize_percentile(tissue.image)
    cell_prob = np.where(tissue.cells > 0, 0.9, 0.1)
    nucleus_prob = np.where(tissue.nuclei > 0, 0.9, 0.1) if nuclei_from == "probability" else None
    config = InstanceConfig()
    whole, whole_nuclei = instances_from_probabilities(cell_prob, nucleus_prob, image, config)
    # windows of 96 px with 48 px of context: 4 x 3 windows, cells cut by every window edge
    cells, nuclei = instances_from_probabilities(cell_prob, nucleus_prob, image, config, window=96, margin=48)
    assert cells.dtype == np.int32 and cells.shape == (300, 260)
    assert np.array_equal(np.unique(cells), np.arange(cells.max() + 1))  # ids 1..n, none missing
    assert np.array_equal(nuclei > 0, whole_nuclei > 0) if nuclei_from == "probability" else nuclei is not None
    assert np.all((nuclei == 0) | (nuclei == cells))  # every nucleus carries its cell's id
    matched = match_instances(whole, cells).toarray() > 0.5
    assert matched.sum() >= 0.97 * max(whole.max(), cells.max())


def test_window_results_come_in_order_and_few_wait(monkeypatch):
    # later items finish first; results still come in order, and no item starts more than twice the thread
    # count ahead of the one being taken (so a huge image's finished windows cannot pile up in memory)
    monkeypatch.setattr(instances, "MAX_WINDOW_THREADS", 2)
    started: list[int] = []

    def work(item: int) -> int:
        started.append(item)
        time.sleep(0.2 if item == 0 else 0.0)  # the others could all be done while the first is found
        return item * item

    for taken, result in enumerate(instances._in_order(work, list(range(20)))):
        assert result == taken * taken
        assert max(started) < taken + 2 * 2 + 1
    assert sorted(started) == list(range(20))
