"""QuPath GeoJSON of label images: valid polygons in image pixels, classes and measurements."""

import json

import numpy as np
import pandas as pd
import pytest
from shapely.geometry import shape

from impartial.export import cell_features, cell_polygon, cell_table, save_geojson


def _labels():
    labels = np.zeros((12, 14), np.int32)
    labels[1:4, 1:5] = 1  # a rectangle, 12 px
    labels[5, 5] = labels[6, 6] = 2  # two pixels touching at a corner only
    labels[8:11, 2:10] = 3
    labels[9, 5] = 0  # a hole: filled in the outline
    return labels


def test_polygons_are_valid_and_follow_pixel_edges():
    features = cell_features(_labels(), offset=(100, 200))
    assert [feature["id"] for feature in features] == ["1", "2", "3"]
    polygons = [shape(feature["geometry"]) for feature in features]
    assert all(polygon.is_valid for polygon in polygons)
    # (x, y) in whole-image pixels: column 1 + 200, row 1 + 100; pixel edges, so a 4 x 3 rectangle has area 12
    assert polygons[0].bounds == (201.0, 101.0, 205.0, 104.0) and polygons[0].area == 12
    # two pixels joined at a corner make a self-touching outline: split into a valid MultiPolygon of area 2
    assert polygons[1].geom_type == "MultiPolygon" and polygons[1].area == 2
    assert polygons[2].area == 24  # the hole is filled
    assert features[0]["properties"]["measurements"] == {"id": 1, "area": 12}


def test_table_gives_classes_and_measurements_and_nuclei_their_geometry(tmp_path):
    labels = _labels()
    image = np.stack([labels * 10.0, np.ones(labels.shape)]).astype(np.float32)
    class_map = np.where(labels == 3, 1, 0)
    table = cell_table(labels, image, ["membrane", "nuclear"], uncertainty=np.full(labels.shape, 0.25),
                       class_map=class_map, class_names=["cytoplasm", "nucleus_out_of_cytoplasm"])
    nuclei = np.where(labels == 1, 1, 0)
    nuclei[1, 4] = 0
    features = cell_features(labels, table, object_type="cell", nuclei=nuclei)
    properties = [feature["properties"] for feature in features]
    assert [item["classification"]["name"] for item in properties] == ["cytoplasm", "cytoplasm",
                                                                        "nucleus_out_of_cytoplasm"]
    assert properties[0]["objectType"] == "cell"
    assert properties[2]["measurements"]["mean_membrane"] == pytest.approx(30.0)
    assert properties[2]["measurements"]["mean_uncertainty"] == pytest.approx(0.25)
    assert shape(properties[0]["nucleusGeometry"]).area == 11 and "nucleusGeometry" not in properties[1]
    save_geojson(tmp_path / "cells.geojson", features)
    collection = json.loads((tmp_path / "cells.geojson").read_text())
    assert collection["type"] == "FeatureCollection" and len(collection["features"]) == 3
    assert all(shape(feature["geometry"]).is_valid for feature in collection["features"])


def test_detections_and_wrong_object_types():
    features = cell_features(_labels(), pd.DataFrame({"id": [1, 2, 3], "class": ["a", "b", "c"],
                                                      "area": [12, 2, 23]}), object_type="detection")
    assert {feature["properties"]["objectType"] for feature in features} == {"detection"}
    with pytest.raises(ValueError, match="objectType"):
        cell_features(_labels(), object_type="tile")
    assert cell_features(np.zeros((4, 4), np.int32)) == []


def test_a_single_polygon_for_a_ring_shaped_cell():
    mask = np.ones((5, 5), bool)
    mask[2, 2] = False
    polygon = cell_polygon(mask, offset=(3, 4))
    assert polygon.is_valid and polygon.area == 25 and polygon.bounds == (4.0, 3.0, 9.0, 8.0)


def test_outlines_traced_once_serve_the_rois_and_the_geojson(tmp_path, monkeypatch):
    import zipfile

    from impartial import export

    labels = _labels()
    outlines = export.cell_outlines(labels)
    assert list(outlines) == [1, 2, 3]
    assert sorted(map(tuple, outlines[1].tolist())) == [(1, 1), (1, 4), (5, 1), (5, 4)]  # x 1..5, y 1..4
    expected = cell_features(labels, offset=(100, 200))
    export.save_roi_zip(tmp_path / "traced.zip", labels)

    def no_tracing(mask):
        raise AssertionError("traced again")

    monkeypatch.setattr(export, "pixel_edge_outline", no_tracing)
    assert cell_features(labels, offset=(100, 200), outlines=outlines) == expected
    export.save_roi_zip(tmp_path / "given.zip", labels, outlines)
    traced, given = zipfile.ZipFile(tmp_path / "traced.zip"), zipfile.ZipFile(tmp_path / "given.zip")
    assert traced.namelist() == given.namelist()
    assert all(traced.read(name) == given.read(name) for name in traced.namelist())
