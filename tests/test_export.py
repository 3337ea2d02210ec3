"""Prediction npz, per-cell table, label TIFF and ImageJ ROI zip export."""

import zipfile

import numpy as np
import pytest
import roifile
import tifffile
from scipy import ndimage
from skimage.segmentation import relabel_sequential

from impartial.export import (
    cell_table,
    load_prediction_npz,
    pixel_edge_outline,
    save_cell_csv,
    save_label_tiff,
    save_prediction_npz,
    save_roi_zip,
)
from impartial.io import read_labels, read_roi_zip


def _prediction(height=3, width=4):
    rng = np.random.default_rng(0)
    return {
        "class_segmentation": rng.random((2, height, width), dtype=np.float32),
        "class_segmentation_variance": rng.random((2, height, width), dtype=np.float32),
        "entropy": rng.random((1, height, width), dtype=np.float32),
        "instances": np.arange(height * width, dtype=np.int32).reshape(height, width),
        "class_names": ["nucleus_in_cytoplasm", "nucleus_out_of_cytoplasm"],
        "task_names": ["nuclei"],
    }


def test_prediction_npz_round_trip_without_pickles(tmp_path):
    arrays = _prediction()
    save_prediction_npz(tmp_path / "p.npz", nuclei=arrays["instances"] * 2, **arrays)
    with np.load(tmp_path / "p.npz", allow_pickle=False) as raw:
        assert raw["class_names"].dtype.kind == "U"
    loaded = load_prediction_npz(tmp_path / "p.npz")
    assert loaded["class_names"] == arrays["class_names"] and loaded["task_names"] == ["nuclei"]
    for key in ("class_segmentation", "class_segmentation_variance", "entropy", "instances"):
        np.testing.assert_array_equal(loaded[key], arrays[key])
    np.testing.assert_array_equal(loaded["nuclei"], arrays["instances"] * 2)
    save_prediction_npz(tmp_path / "q.npz", **arrays)
    assert "nuclei" not in load_prediction_npz(tmp_path / "q.npz")


def test_prediction_npz_checks_name_counts(tmp_path):
    arrays = {**_prediction(), "class_names": ["only_one"]}
    with pytest.raises(ValueError, match="1 class names for 2 maps"):
        save_prediction_npz(tmp_path / "p.npz", **arrays)


def test_cell_table_by_hand(tmp_path):
    instances = np.array([[1, 1, 0, 0],
                          [1, 0, 0, 2],
                          [0, 0, 2, 2]], np.int32)
    image = np.stack([np.arange(12, dtype=np.float32).reshape(3, 4), np.full((3, 4), 2.0, np.float32)])
    uncertainty = np.where(instances == 2, 0.5, 0.1).astype(np.float32)
    class_map = np.array([[0, 1, 1, 1],
                          [1, 0, 0, 0],
                          [0, 0, 0, 0]])
    table = cell_table(instances, image, ["membrane", "nuclear"], uncertainty=uncertainty, class_map=class_map,
                       class_names=["cytoplasm", "nucleus"])
    assert list(table.columns) == ["id", "class", "area", "centroid_y", "centroid_x", "mean_membrane",
                                   "mean_nuclear", "mean_uncertainty"]
    assert list(table["id"]) == [1, 2] and list(table["area"]) == [3, 3]
    assert list(table["class"]) == ["nucleus", "cytoplasm"]  # cell 1: classes 0, 1, 1; cell 2: 0, 0, 0
    # cell 1 at (0, 0), (0, 1), (1, 0); cell 2 at (1, 3), (2, 2), (2, 3)
    np.testing.assert_allclose(table["centroid_y"], [1 / 3, 5 / 3])
    np.testing.assert_allclose(table["centroid_x"], [1 / 3, 8 / 3])
    np.testing.assert_allclose(table["mean_membrane"], [(0 + 1 + 4) / 3, (7 + 10 + 11) / 3])
    np.testing.assert_allclose(table["mean_nuclear"], [2.0, 2.0])
    np.testing.assert_allclose(table["mean_uncertainty"], [0.1, 0.5], rtol=1e-6)
    save_cell_csv(tmp_path / "cells.csv", table)
    assert (tmp_path / "cells.csv").read_text().splitlines()[1].startswith("1,nucleus,3,")


def test_cell_table_gives_microns_when_the_pixel_size_is_known():
    instances = np.zeros((4, 4), np.int32)
    instances[1:3, 0:2] = 1  # 4 px, centroid (1.5, 0.5)
    table = cell_table(instances, np.ones((1, 4, 4), np.float32), ["dapi"], pixel_size_um=0.5)
    assert list(table.columns[:6]) == ["id", "class", "area", "area_um2", "centroid_y", "centroid_x"]
    assert table.loc[0, "area_um2"] == pytest.approx(1.0)
    assert (table.loc[0, "centroid_y_um"], table.loc[0, "centroid_x_um"]) == pytest.approx((0.75, 0.25))
    with pytest.raises(ValueError, match="positive"):
        cell_table(instances, np.ones((1, 4, 4), np.float32), ["dapi"], pixel_size_um=0.0)


def test_cell_table_single_class_and_no_cells():
    image = np.ones((1, 3, 3), np.float32)
    instances = np.zeros((3, 3), np.int32)
    instances[1, 1] = 4
    table = cell_table(instances, image, ["dapi"])
    assert list(table["class"]) == ["cell"] and list(table["id"]) == [4] and "mean_uncertainty" not in table
    empty = cell_table(np.zeros((3, 3), np.int32), image, ["dapi"], class_map=np.zeros((3, 3), int),
                       class_names=["a", "b"])
    assert len(empty) == 0 and "mean_dapi" in empty


def test_label_tiff_dtype_follows_the_largest_id(tmp_path):
    small = np.array([[0, 3], [65535, 1]], np.int32)
    save_label_tiff(tmp_path / "s.tif", small)
    large = np.array([[0, 70000]], np.int32)
    save_label_tiff(tmp_path / "l.tif", large)
    np.testing.assert_array_equal(read_labels(tmp_path / "s.tif"), small)
    np.testing.assert_array_equal(read_labels(tmp_path / "l.tif"), large)
    assert tifffile.imread(tmp_path / "s.tif").dtype == np.uint16
    assert tifffile.imread(tmp_path / "l.tif").dtype == np.int32


@pytest.mark.parametrize("mask, corners", [
    ([[1]], [(0, 1), (0, 0), (1, 0), (1, 1)]),
    ([[1, 1], [1, 0]], [(0, 2), (0, 0), (2, 0), (2, 1), (1, 1), (1, 2)]),  # L: six corners, no mid-edge points
    ([[1, 0], [0, 1]], [(1, 2), (1, 1), (0, 1), (0, 0), (1, 0), (1, 1), (2, 1), (2, 2)]),  # joined at (1, 1)
])
def test_pixel_edge_outline_by_hand(mask, corners):
    outline = pixel_edge_outline(np.array(mask, bool))
    # same closed polygon regardless of where the walk starts or which way it turns
    start = [tuple(point) for point in outline.tolist()]
    rotations = [corners[i:] + corners[:i] for i in range(len(corners))]
    reversed_corners = corners[::-1]
    rotations += [reversed_corners[i:] + reversed_corners[:i] for i in range(len(corners))]
    assert start in rotations


def _blobs(seed: int, size: int = 40) -> np.ndarray:
    """Random blobs without holes, one id per 8-connected piece (ids 1..N).

    Little smoothing gives ragged shapes: pixels joined only at a corner, and background notches joined to the
    outside only at a corner (ImageJ's traced outlines keep those outside).
    """
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.random((size, size)), 1.0)
    mask = ndimage.binary_fill_holes(field > np.quantile(field, 0.6), structure=np.ones((3, 3)))
    labels, _ = ndimage.label(mask, structure=np.ones((3, 3)))
    return labels.astype(np.int32)


@pytest.mark.parametrize("seed", range(5))
def test_roi_zip_round_trip_is_exact(tmp_path, seed):
    labels = _blobs(seed)
    assert labels.max() >= 2
    save_roi_zip(tmp_path / "cells.zip", labels)
    np.testing.assert_array_equal(read_roi_zip(tmp_path / "cells.zip", labels.shape), labels)


def test_roi_zip_round_trip_with_corner_contacts(tmp_path):
    labels = np.array([[1, 1, 0, 0, 0],
                       [1, 1, 1, 1, 0],
                       [1, 0, 1, 1, 0],  # the 0 at (2, 1) touches the outside only at a corner: stays outside
                       [0, 1, 1, 1, 0],
                       [0, 0, 0, 0, 2],  # cell 2 is two pixels joined at a corner
                       [0, 0, 0, 2, 0]], np.int32)
    save_roi_zip(tmp_path / "cells.zip", labels)
    np.testing.assert_array_equal(read_roi_zip(tmp_path / "cells.zip", labels.shape), labels)


def test_roi_zip_names_types_and_renumbering(tmp_path):
    labels = np.zeros((8, 8), np.int32)
    labels[1:3, 1:4] = 5
    labels[5:7, 2:8] = 9
    labels[4, 0] = 2
    save_roi_zip(tmp_path / "cells.zip", labels)
    with zipfile.ZipFile(tmp_path / "cells.zip") as archive:
        assert archive.namelist() == ["2.roi", "5.roi", "9.roi"]
    rois = roifile.ImagejRoi.fromfile(tmp_path / "cells.zip")
    assert [roi.name for roi in rois] == ["2", "5", "9"]
    assert all(roi.roitype == roifile.ROI_TYPE.TRACED for roi in rois)
    assert sorted(map(tuple, rois[1].coordinates().tolist())) == [(1, 1), (1, 3), (4, 1), (4, 3)]  # x 1..4, y 1..3
    # ids come back as 1..N in file order
    np.testing.assert_array_equal(read_roi_zip(tmp_path / "cells.zip", labels.shape), relabel_sequential(labels)[0])
