"""Synthetic tissue: shapes, determinism, consistent ground truth and a plausible image."""

import numpy as np
import pytest
from scipy import ndimage
from skimage.measure import label as connected_components
from skimage.segmentation import find_boundaries

from impartial.config import RunConfig, TaskConfig, preset_config
from impartial.errors import InputError
from impartial.synthetic import SyntheticTissue, class_labels, make_dataset, make_tissue

MAPS = ("cells", "nuclei", "cytoplasm", "nucleus_in", "nucleus_out")


@pytest.fixture(scope="module")
def tissue() -> SyntheticTissue:
    return make_tissue(96, 128, seed=3)


def test_shapes_and_dtypes(tissue):
    assert tissue.image.shape == (2, 96, 128) and tissue.image.dtype == np.float32
    assert np.isfinite(tissue.image).all()
    for name in MAPS:
        array = getattr(tissue, name)
        assert array.shape == (96, 128) and array.dtype == np.int32 and array.min() == 0


def test_same_seed_same_tissue_other_seed_other_tissue(tissue):
    again, other = make_tissue(96, 128, seed=3), make_tissue(96, 128, seed=4)
    assert np.array_equal(again.image, tissue.image)
    assert all(np.array_equal(getattr(again, name), getattr(tissue, name)) for name in MAPS)
    assert not np.array_equal(other.cells, tissue.cells)


def test_cells_are_connected_and_numbered_from_one(tissue):
    n_cells = tissue.cells.max()
    assert n_cells > 20
    assert np.array_equal(np.unique(tissue.cells), np.arange(n_cells + 1))
    # One connected piece per cell: as many components (touching cells kept apart) as ids.
    assert connected_components(tissue.cells, background=0, connectivity=2).max() == n_cells


def test_ground_truth_maps_agree(tissue):
    cells, nuclei = tissue.cells, tissue.nuclei
    inside = nuclei > 0
    assert np.array_equal(nuclei[inside], cells[inside])  # a nucleus lies in its own cell
    assert np.array_equal(tissue.cytoplasm, np.where(inside, 0, cells))
    assert not np.any((tissue.nucleus_in > 0) & (tissue.nucleus_out > 0))
    assert np.array_equal(tissue.nucleus_in + tissue.nucleus_out, nuclei)
    # A nucleus-only cell is exactly its nucleus; every other nucleated cell keeps some cytoplasm.
    only = np.unique(tissue.nucleus_out)[1:]
    assert only.size > 0
    assert np.array_equal(np.isin(cells, only), tissue.nucleus_out > 0)
    assert set(np.unique(tissue.nucleus_in)[1:]) <= set(np.unique(tissue.cytoplasm)[1:])
    assert np.count_nonzero(np.unique(nuclei)) >= 0.9 * cells.max()


def test_most_cells_touch_a_neighbour_but_gaps_remain():
    cells = make_tissue(128, 128, seed=1).cells
    largest = ndimage.maximum_filter(cells, size=3)
    smallest = ndimage.minimum_filter(np.where(cells > 0, cells, cells.max() + 1), size=3)
    touching = (cells > 0) & ((largest != cells) | ((smallest != cells) & (smallest <= cells.max())))
    share_touching = np.count_nonzero(np.unique(cells[touching])) / cells.max()
    assert share_touching > 0.7
    assert 0.05 < np.mean(cells == 0) < 0.5


def test_nuclei_only_fraction_controls_the_nucleus_only_cells():
    none = make_tissue(96, 96, seed=2, nuclei_only_fraction=0.0)
    assert not none.nucleus_out.any()
    many = make_tissue(96, 96, seed=2, nuclei_only_fraction=1.0)
    assert np.count_nonzero(np.unique(many.nucleus_out)) > 0.5 * many.cells.max()


def test_image_shows_membranes_at_rims_and_nuclei_in_the_nuclear_channel():
    tissue = make_tissue(128, 128, seed=5, noise=0.0, illumination=0.0)
    membrane, nuclear = tissue.image
    rims = find_boundaries(tissue.cells, mode="inner") & (tissue.nucleus_out == 0)
    deep_cytoplasm = (tissue.cytoplasm > 0) & (ndimage.distance_transform_edt(~rims) >= 3)
    assert membrane[rims].mean() > 1.5 * membrane[deep_cytoplasm].mean()
    far_background = ndimage.distance_transform_edt(tissue.cells == 0) >= 3  # beyond the blur of the rims
    assert membrane[far_background].mean() < 0.5 * membrane[deep_cytoplasm].mean()
    assert nuclear[tissue.nuclei > 0].mean() > 3 * nuclear[tissue.nuclei == 0].mean()


def test_class_labels_follow_the_tasks(tissue):
    vectra = class_labels(tissue, preset_config("quick", "vectra"))
    assert [len(task) for task in vectra] == [1, 2]
    assert np.array_equal(vectra[0][0], np.where(tissue.nucleus_out > 0, 0, tissue.cells))
    assert vectra[1][0] is tissue.nucleus_in and vectra[1][1] is tissue.nucleus_out
    tissuenet = class_labels(tissue, preset_config("quick", "tissuenet"))
    assert tissuenet[0][0] is tissue.cells and tissuenet[1][0] is tissue.nuclei
    odd = RunConfig(tasks=[TaskConfig(classes=["cell", "membrane"], ncomponents=[1, 1, 1])])
    with pytest.raises(InputError, match="membrane"):
        class_labels(tissue, odd)


def test_make_dataset_uses_consecutive_seeds():
    dataset = make_dataset(2, size=64, seed=10)
    assert len(dataset) == 2 and dataset[0].image.shape == (2, 64, 64)
    assert np.array_equal(dataset[1].cells, make_tissue(64, 64, seed=11).cells)


def test_bad_arguments_raise_input_error():
    with pytest.raises(InputError):
        make_tissue(4, 64)
    with pytest.raises(InputError):
        make_tissue(64, 64, cell_radius=(10, 5))
    with pytest.raises(InputError):
        make_tissue(64, 64, density=0.0)
