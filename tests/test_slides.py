"""Whole slides on a real local Dask cluster (worker processes): cells, OME-Zarr, GeoJSON, resume, bad slides."""

import itertools
import json
import os
import shutil
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import tifffile
import yaml
import zarr

from factories import scribbled_images, tiny_config
from impartial import slides
from impartial.cli import main
from impartial.errors import InputError
from impartial.io import normalize_percentile
from impartial.metrics import instance_scores
from impartial.pipeline import segment
from impartial.runs import Run
from impartial.slides import (
    STOPPED_MESSAGE,
    SlideProgress,
    dask_client,
    estimate_percentiles,
    find_slides,
    finish_slide,
    finished_slides,
    make_job,
    open_slide,
    output_paths,
    predict_chunk,
    predict_slides,
    prepare_outputs,
    receptive_halo,
)
from impartial.synthetic import make_tissue
from impartial.train import Trainer

# a 600 x 640 slide is 4 x 4 chunks (16: all of them go into the percentiles, which are then exactly
# normalize_percentile's); cells are up to about 30 px wide. Each chunk's instance step takes the Li levels
# of the nuclear channel (its seeds) and of the stains (the run keeps its cells to them) from its own core + margin
# (as the windowed step of impartial.instances does): much smaller windows than these make those levels, and so a
# few cells, differ from the whole image's.
HEIGHT, WIDTH, CHUNK, MARGIN = 600, 640, 160, 64


def _train(folder, tasks="whole_cell", **overrides):
    config = tiny_config(tasks, **{"train.epochs": 12, "train.lr": 0.01, **overrides})
    config.train.prior = False  # no shipped weights: the test is self-contained
    return Trainer(config, scribbled_images(config), folder).run().dir


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny run without dropout: its prediction is deterministic up to tiling."""
    return _train(tmp_path_factory.mktemp("run"), **{"model.dropout": 0.0})


@pytest.fixture(scope="module")
def dropout_run_dir(tmp_path_factory):
    """A tiny run with MC dropout: every prediction pass draws its own masks."""
    return _train(tmp_path_factory.mktemp("dropout_run"), **{"model.dropout": 0.2})


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        yield client


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    """A 2-channel synthetic slide as a tiled OME-TIFF (uint16), with its raw pixels and true cells."""
    tissue = make_tissue(HEIGHT, WIDTH, seed=5)
    raw = (tissue.image * 1000).astype(np.uint16)
    path = tmp_path_factory.mktemp("slides") / "tissue.ome.tif"
    tifffile.imwrite(path, raw, tile=(64, 64), metadata={"axes": "CYX", "PhysicalSizeX": 0.5,
                                                          "PhysicalSizeY": 0.5})
    return path, raw, tissue.cells


@pytest.fixture(scope="module")
def predicted(run_dir, slide, client, tmp_path_factory):
    """The slide predicted on the cluster, and the same image segmented in one process."""
    path, raw, _ = slide
    out = tmp_path_factory.mktemp("out")
    results = predict_slides(client, run_dir, [path], out, chunk=CHUNK, margin=MARGIN, threads=1, progress=False)
    assert results[0].error is None, results[0].error
    single = segment(Run.load(run_dir), normalize_percentile(raw.astype(np.float32)))
    return out, results[0].summary, single


def _labels(out, name="tissue", group="labels/cells/0"):
    return np.asarray(zarr.open_group(str(out / f"{name}.ome.zarr"), mode="r")[group][:])


def test_cells_and_probabilities_match_the_single_process_result(predicted):
    out, summary, single = predicted
    cells = _labels(out)
    assert single.cells.max() > 50  # the comparison means something: many cells, many cross chunk borders
    scores = instance_scores(single.cells, cells)
    assert scores["f1"] >= 0.99, scores
    assert summary["cells"] == len(np.unique(cells)) - 1
    probability = np.asarray(zarr.open_group(str(out / "tissue.ome.zarr"), mode="r")["0"][0], np.float32)
    expected = single.prediction.tasks[0].class_segmentation[0]
    assert expected.std() > 0.05
    # the tiled predictor's own tolerance (tests/test_predict.py), float16 storage included
    assert np.abs(probability - expected).mean() < 0.001
    assert np.abs(probability - expected).max() < 0.02


def test_cells_across_chunk_borders_come_out_whole(predicted):
    out, _, single = predicted
    cells = _labels(out)
    whole, crossing = 0, 0
    for cell_id in range(1, single.cells.max() + 1):
        rows, columns = np.nonzero(single.cells == cell_id)
        cut = [(coordinates, border) for coordinates, length in ((rows, HEIGHT), (columns, WIDTH))
               for border in range(CHUNK, length, CHUNK)
               if min(np.count_nonzero(coordinates < border), np.count_nonzero(coordinates >= border))
               >= 0.3 * len(coordinates)]
        if not cut:
            continue  # no chunk border cuts this cell near its middle
        crossing += 1
        # the cluster's cell there: one label on both sides of the border, the same pixels as in one process
        ids = cells[rows, columns]
        main_id = np.bincount(ids).argmax()
        mine = cells == main_id
        iou = np.count_nonzero(ids == main_id) / np.count_nonzero(mine | (single.cells == cell_id))
        coordinates, border = cut[0]
        on_both_sides = (coordinates[ids == main_id] < border).any() and (coordinates[ids == main_id] >= border).any()
        whole += main_id > 0 and iou >= 0.8 and on_both_sides
    assert crossing >= 20
    # the few others differ for the reason the F1 above is not 1 (per-chunk nuclear Otsu level), not at a seam
    assert whole >= 0.95 * crossing, (whole, crossing)


def test_the_same_cells_whatever_the_chunk_size(predicted, run_dir, slide, client, tmp_path):
    out, _, _ = predicted
    results = predict_slides(client, run_dir, [slide[0]], tmp_path, chunk=192, margin=MARGIN, threads=1,
                             progress=False)
    assert results[0].error is None
    assert instance_scores(_labels(out), _labels(tmp_path))["f1"] >= 0.99


def test_ome_zarr_reads_back_with_axes_scales_and_label_names(predicted):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    out, summary, _ = predicted
    nodes = {node.metadata.get("name"): node for node in Reader(parse_url(str(out / "tissue.ome.zarr")))()}
    image, labels = nodes["prediction"], nodes["cells"]
    assert [axis["name"] for axis in image.metadata["axes"]] == ["c", "y", "x"]
    assert image.metadata["axes"][1]["unit"] == "micrometer"
    # three levels: the chunks' 160 px halve twice before they fall under 32 px
    sizes = [(HEIGHT, WIDTH), (HEIGHT // 2, WIDTH // 2), (HEIGHT // 4, WIDTH // 4)]
    assert [level.shape for level in image.data] == [(3, *size) for size in sizes]
    assert [transform[0]["scale"] for transform in image.metadata["coordinateTransformations"]] == [
        [1.0, 0.5, 0.5], [1.0, 1.0, 1.0], [1.0, 2.0, 2.0]]
    assert [level.shape for level in labels.data] == sizes
    assert str(labels.data[0].dtype) == "int32"
    assert labels.metadata["properties"][1] == {"class": "cell"}
    assert len(labels.metadata["properties"]) == summary["cells"]
    root = zarr.open_group(str(out / "tissue.ome.zarr"), mode="r")
    assert root["0"].dtype == np.float16
    assert [channel["label"] for channel in root.attrs["omero"]["channels"]] == [
        "cell probability", "cell variance", "entropy"]
    assert root["labels"].attrs["labels"] == ["cells"]
    # level 1 of the labels is every second pixel of level 0
    np.testing.assert_array_equal(root["labels/cells/1"][:], root["labels/cells/0"][::2, ::2])
    settings = root.attrs["impartial"]
    assert settings["chunk"] == CHUNK and settings["normalisation"]["percentiles"] == [1.0, 99.8]
    assert len(settings["normalisation"]["low"]) == 2


def test_geojson_has_one_valid_polygon_per_cell_with_measurements(predicted):
    from shapely.geometry import shape

    out, _, _ = predicted
    collection = json.loads((out / "tissue.geojson").read_text())
    table = pd.read_csv(out / "tissue_cells.csv")
    cells = _labels(out)
    assert collection["type"] == "FeatureCollection"
    features = collection["features"]
    ids = [int(feature["id"]) for feature in features]
    assert sorted(ids) == list(table["id"]) == sorted(set(np.unique(cells)) - {0})
    areas = dict(zip(table["id"], table["area"], strict=True))
    for feature in features:
        polygon = shape(feature["geometry"])
        assert polygon.is_valid and polygon.area >= areas[int(feature["id"])]  # holes are filled
        properties = feature["properties"]
        assert properties["objectType"] == "cell" and properties["classification"]["name"] == "cell"
        assert set(properties["measurements"]) >= {"area", "centroid_x", "centroid_y", "mean_membrane",
                                                   "mean_nuclear", "mean_uncertainty"}
    # polygons sit where their cells are: the centroid of the outline is near the cell's centroid
    first = features[0]
    centre = shape(first["geometry"]).centroid
    row = table.set_index("id").loc[int(first["id"])]
    assert abs(centre.x - 0.5 - row["centroid_x"]) < 3 and abs(centre.y - 0.5 - row["centroid_y"]) < 3


def test_a_slide_without_cells_gets_a_table_of_its_columns_and_an_empty_feature_collection(predicted, slide,
                                                                                            run_dir, tmp_path):
    # the chunks' records rewritten as if no chunk had found a cell, then the last task again
    out = tmp_path / "out"
    shutil.copytree(predicted[0], out)
    job = make_job(open_slide(slide[0]), Run.load(run_dir), out, chunk=CHUNK, margin=MARGIN)
    records = sorted(job.work.glob("measured_*.json"))
    assert len(records) == len(job.grid)
    columns = list(pd.read_csv(out / "tissue_cells.csv").columns)
    for record in records:
        record.write_text(json.dumps({"cells": 0, "classes": []}))
        parts = record.with_name(record.name.replace("measured_", "cells_"))
        parts.with_suffix(".csv").write_text(",".join(columns) + "\n")
        parts.with_suffix(".geojson").write_text("")
    summary = finish_slide(job)
    assert summary["cells"] == 0
    assert (out / "tissue_cells.csv").read_text() == ",".join(columns) + "\n"
    assert json.loads((out / "tissue.geojson").read_text()) == {"type": "FeatureCollection", "features": []}
    label = zarr.open_group(str(out / "tissue.ome.zarr"), mode="r")["labels/cells"].attrs["image-label"]
    assert label["properties"] == []


def test_cell_table_matches_the_whole_image_table(predicted, slide):
    from impartial.export import cell_table

    out, _, _ = predicted
    cells, raw = _labels(out), slide[1]
    table = pd.read_csv(out / "tissue_cells.csv").set_index("id")
    expected = cell_table(cells, raw.astype(np.float32), ["membrane", "nuclear"]).set_index("id")
    for column in ("area", "centroid_y", "centroid_x", "mean_membrane", "mean_nuclear"):
        np.testing.assert_allclose(table[column], expected[column], rtol=1e-5, err_msg=column)
    assert (table["area_um2"] == table["area"] * 0.25).all()


def test_a_rerun_after_lost_chunks_gives_identical_output(dropout_run_dir, slide, client, tmp_path):
    # a zarr copy of the slide: the OME-Zarr reader path
    import zarr as zarr_module

    source = tmp_path / "tissue.ome.zarr"
    group = zarr_module.open_group(str(source), mode="w", zarr_format=2)
    group.create_array("0", data=slide[1], chunks=(1, 128, 128))
    group.attrs["multiscales"] = [{"version": "0.4", "axes": [{"name": "c", "type": "channel"},
                                                              {"name": "y", "type": "space"},
                                                              {"name": "x", "type": "space"}],
                                   "datasets": [{"path": "0", "coordinateTransformations": [
                                       {"type": "scale", "scale": [1.0, 1.0, 1.0]}]}]}]
    out = tmp_path / "out"
    first = predict_slides(client, dropout_run_dir, [source], out, chunk=CHUNK, margin=MARGIN, threads=1,
                           progress=False)
    assert first[0].error is None
    before = {name: _labels(out, group=name) for name in ("0", "labels/cells/0", "labels/cells/1")}
    csv, geojson = (out / "tissue_cells.csv").read_text(), (out / "tissue.geojson").read_text()
    assert before["0"][1].max() > 0  # MC dropout gave variance: re-predicted chunks would differ unless seeded

    # a worker lost midway: the records and zarr chunks of some tasks were never written
    work = out / "work" / "tissue"
    kept = {path.name: path.stat().st_mtime_ns for path in work.glob("*_*_*.*")}
    lost = ["pieces_1_2.npz", "pieces_3_0.npz", "labels_2_2.json", "measured_0_1.json", "cells_0_1.csv",
            "cells_0_1.geojson"]
    for name in lost:
        (work / name).unlink()
        del kept[name]
    shutil.rmtree(out / "tissue.ome.zarr" / "0" / "0" / "1")  # probability rows of chunk row 1
    shutil.rmtree(out / "tissue.ome.zarr" / "labels" / "cells" / "0" / "2")
    (out / "tissue_cells.csv").unlink()
    # ... which the written records of those chunk rows do not claim: drop them so they are redone too
    for path in list(work.glob("pieces_1_*.npz")) + list(work.glob("labels_2_*.json")):
        path.unlink()
        kept.pop(path.name, None)

    again = predict_slides(client, dropout_run_dir, [source], out, chunk=CHUNK, margin=MARGIN, threads=1,
                           progress=False)
    assert again[0].error is None
    for name, values in before.items():
        np.testing.assert_array_equal(_labels(out, group=name), values, err_msg=name)
    assert (out / "tissue_cells.csv").read_text() == csv and (out / "tissue.geojson").read_text() == geojson
    # the tasks that had finished were skipped, not redone
    assert {path.name: path.stat().st_mtime_ns for path in work.glob("*_*_*.*") if path.name in kept} == kept


def test_bad_slides_are_named_while_the_others_finish(run_dir, slide, client, tmp_path, capsys):
    damaged = tmp_path / "damaged.tif"
    damaged.write_bytes(b"II*\x00" + bytes(range(256)) * 4)
    three = tmp_path / "three_channels.tif"
    tifffile.imwrite(three, np.ones((3, 64, 64), np.uint16), photometric="minisblack", metadata={"axes": "CYX"})
    good = tmp_path / "good.tif"
    tifffile.imwrite(good, slide[1][:, :150, :150], metadata={"axes": "CYX"})
    out = tmp_path / "out"
    code = main(["predict", "--run", str(run_dir), "--out", str(out), "--scheduler", client.scheduler.address,
                 "--chunk", str(CHUNK), "--margin", str(MARGIN), "--threads", "1",
                 str(damaged), str(three), str(good)])
    error = capsys.readouterr().err
    assert code == 2
    assert f"{damaged}: cannot read the slide" in error
    assert f"{three}: has 3 channel(s), the run expects 2" in error
    assert "2 of 3 slide(s) failed" in error
    assert _labels(out, "good").max() > 0 and (out / "good.geojson").exists()
    assert not (out / "damaged.ome.zarr").exists()


def test_percentiles_from_all_chunks_equal_the_whole_image_normalisation(slide):
    path, raw, _ = slide
    opened = open_slide(path, n_channels=2)
    assert (opened.channels, opened.height, opened.width, opened.pixel_size_um) == (2, HEIGHT, WIDTH, 0.5)
    np.testing.assert_array_equal(opened.read(10, 50, 20, 90), raw[:, 10:50, 20:90])
    exact = estimate_percentiles(opened, chunk=CHUNK)
    assert len(exact["chunks"]) == 16 and exact["stride"] == 1
    lows, highs = np.percentile(raw.reshape(2, -1).astype(np.float32), [1.0, 99.8], axis=1)
    np.testing.assert_allclose(exact["low"], lows)
    np.testing.assert_allclose(exact["high"], highs)
    sampled = estimate_percentiles(opened, chunk=64, max_chunks=6, max_values=5000)
    assert len(sampled["chunks"]) == 6 and sampled["stride"] > 1
    np.testing.assert_allclose(sampled["high"], highs, rtol=0.2)


def test_plain_tiff_and_wrong_inputs(tmp_path):
    plain = tmp_path / "grey.tif"
    tifffile.imwrite(plain, np.arange(64 * 80, dtype=np.uint16).reshape(64, 80))
    opened = open_slide(plain)
    assert (opened.channels, opened.height, opened.width) == (1, 64, 80)
    assert opened.read(0, 2, 0, 3).tolist() == [[[0, 1, 2], [80, 81, 82]]]
    with pytest.raises(InputError, match="1 channel\\(s\\), the run expects 2"):
        open_slide(plain, n_channels=2)
    with pytest.raises(InputError, match="not found"):
        open_slide(tmp_path / "missing.ome.zarr")
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, np.zeros((4, 2, 32, 32), np.uint16), metadata={"axes": "ZCYX"})
    with pytest.raises(InputError, match="no Z stacks"):
        open_slide(stack)


def test_receptive_halo_covers_the_network():
    # two 3x3 convolutions per level, at scales 1, 2, ... 2**depth: 20, 44 and 92 px for depths 2, 3 and 4,
    # rounded up to the network's size multiple
    assert [receptive_halo(depth) for depth in (2, 3, 4)] == [20, 48, 96]


def test_outputs_of_other_settings_are_refused_and_deleted_outputs_start_afresh(run_dir, slide, tmp_path):
    from impartial.slides import make_job, prepare_outputs

    run = Run.load(run_dir)
    job = make_job(open_slide(slide[0], n_channels=2), run, tmp_path, chunk=CHUNK, margin=MARGIN)
    assert prepare_outputs(job) is False and prepare_outputs(job) is True  # the second call resumes
    (job.work / "pieces_0_0.npz").write_bytes(b"a record")
    other = make_job(open_slide(slide[0], n_channels=2), run, tmp_path, chunk=CHUNK, margin=MARGIN // 2)
    with pytest.raises(InputError, match="tissue.ome.zarr: holds the output of another run or other settings"):
        prepare_outputs(other)
    shutil.rmtree(job.zarr_path)
    assert prepare_outputs(other) is False and not (job.work / "pieces_0_0.npz").exists()
    with pytest.raises(InputError, match="chunk side must be a multiple of 4"):
        make_job(open_slide(slide[0]), run, tmp_path, chunk=102)
    with pytest.raises(InputError, match="margin"):
        make_job(open_slide(slide[0]), run, tmp_path, chunk=64, margin=96)


def test_command_line_starts_a_local_cluster(run_dir, slide, tmp_path, capsys):
    small = tmp_path / "small.ome.tif"
    tifffile.imwrite(small, slide[1][:, :200, :260], metadata={"axes": "CYX"})
    command = ["predict", "--run", str(run_dir), "--out", str(tmp_path / "out"), "--workers", "1",
               "--chunk", "128", "--margin", "48", str(small)]
    assert main(command) == 0
    printed = capsys.readouterr().out
    assert "small: " in printed and "small.ome.zarr" in printed and "small.geojson" in printed
    assert _labels(tmp_path / "out", "small").max() > 10


def test_a_run_with_a_nucleus_task_writes_nuclei_labels(slide, client, tmp_path_factory):
    run = _train(tmp_path_factory.mktemp("tissuenet_run"), tasks="tissuenet")
    small = tmp_path_factory.mktemp("nuclei") / "small.ome.tif"
    tifffile.imwrite(small, slide[1][:, :200, :260], metadata={"axes": "CYX"})
    out = small.parent / "out"
    results = predict_slides(client, run, [small], out, chunk=128, margin=48, threads=1, progress=False)
    assert results[0].error is None, results[0].error
    root = zarr.open_group(str(out / "small.ome.zarr"), mode="r")
    assert root["labels"].attrs["labels"] == ["cells", "nuclei"]
    assert [channel["label"] for channel in root.attrs["omero"]["channels"]] == [
        "cell probability", "nucleus probability", "cell variance", "nucleus variance", "entropy"]
    cells, nuclei = root["labels/cells/0"][:], root["labels/nuclei/0"][:]
    assert nuclei.max() > 0 and np.all(cells[nuclei > 0] == nuclei[nuclei > 0])  # a nucleus has its cell's id
    features = json.loads((out / "small.geojson").read_text())["features"]
    assert any("nucleusGeometry" in feature["properties"] for feature in features)


def test_a_worker_keeps_a_few_slides_open_and_reopens_the_others(tmp_path):
    from impartial import slides

    opened = []
    for index in range(slides.OPEN_SLIDES + 2):
        path = tmp_path / f"slide{index}.tif"
        tifffile.imwrite(path, np.full((2, 16, 16), index, np.uint16), photometric="minisblack",
                         metadata={"axes": "CYX"})
        opened.append(open_slide(path))
    for _ in range(2):  # the second round reopens the slides closed to make room
        assert [int(item.read(0, 1, 0, 1)[1, 0, 0]) for item in opened] == list(range(len(opened)))
        assert len(slides._ARRAYS) <= slides.OPEN_SLIDES


def test_progress_counts_each_slides_chunk_tasks_up_to_its_chunks(run_dir, slide, client, tmp_path):
    seen = []
    big = 2 * CHUNK  # a 600 x 640 slide in 2 x 2 chunks: a quicker run
    results = predict_slides(client, run_dir, [slide[0], tmp_path / "missing.tif"], tmp_path / "out", chunk=big,
                             margin=MARGIN, threads=1, progress=False, on_progress=seen.append)
    assert results[0].error is None and "not found" in results[1].error
    assert {item.path for item in seen} == {str(slide[0])}  # a slide that never started has no progress
    assert seen[0] == SlideProgress(str(slide[0]), 4) and seen[0].fraction == 0.0
    assert seen[-1] == SlideProgress(str(slide[0]), 4, predicted=4, labelled=4, measured=4)
    assert seen[-1].fraction == 1.0
    assert len(seen) == 1 + 3 * 4  # submitted, then once per chunk task
    for before, after in itertools.pairwise(seen):  # one task at a time, never counting back
        steps = [getattr(after, stage) - getattr(before, stage) for stage in ("predicted", "labelled", "measured")]
        assert sorted(steps) == [0, 0, 1]
    assert [item.labelled for item in seen if item.predicted < 4] == [0] * 4  # labels wait for every count


def test_a_stop_cancels_the_rest_and_names_the_unfinished_slides(run_dir, slide, client, tmp_path):
    stop = threading.Event()
    stopped = []
    results = predict_slides(client, run_dir, [slide[0]], tmp_path / "out", chunk=CHUNK, margin=MARGIN,
                             threads=1, progress=False, stop_event=stop, on_result=stopped.append,
                             on_progress=lambda done: done.predicted and stop.set())
    assert results[0].error == f"{slide[0]}: {STOPPED_MESSAGE}" and results[0].summary is None
    assert stopped == results
    # the chunks the two workers were predicting when it stopped are written, the other 16 - 3 are not
    assert 1 <= len(list((tmp_path / "out" / "work" / "tissue").glob("pieces_*.npz"))) <= 3
    assert finished_slides(tmp_path / "out") == []


def test_find_slides_and_the_finished_ones(predicted, tmp_path):
    out, summary, _ = predicted
    assert finished_slides(out) == ["tissue"]
    assert {kind: str(path) for kind, path in output_paths(out, "tissue").items()} == {
        kind: summary[kind] for kind in ("zarr", "csv", "geojson")}
    folder = tmp_path / "cohort"
    (folder / "b.ome.zarr").mkdir(parents=True)
    (folder / "unnamed").mkdir()
    (folder / "unnamed" / ".zattrs").write_text("{}")
    for name in ("a.ome.tif", "c.TIFF", "notes.txt", ".hidden.tif"):
        (folder / name).write_bytes(b"")
    assert [path.name for path in find_slides(folder)] == ["a.ome.tif", "b.ome.zarr", "c.TIFF"]
    assert find_slides(folder / "unnamed") == [folder / "unnamed"]  # an OME-Zarr folder is one slide
    assert find_slides(folder / "a.ome.tif") == [folder / "a.ome.tif"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no slides") as refused:
        find_slides(tmp_path / "empty")
    assert str(tmp_path / "empty") in str(refused.value)
    with pytest.raises(InputError, match="not found"):
        find_slides(folder / "missing")


def test_a_scheduler_that_is_no_address_is_named_in_one_message():
    with pytest.raises(InputError, match="cannot reach the Dask scheduler") as caught:
        with dask_client("no-such-scheme://scheduler", workers=1):
            pass
    assert "no-such-scheme://scheduler" in str(caught.value)


def test_local_workers_keep_glibcs_adaptive_memory_settings_and_the_image_does_the_same():
    # Dask's MALLOC_TRIM_THRESHOLD_ for its workers halves torch's speed there, and two malloc arenas lower their
    # peak memory (see WORKER_ENVIRONMENT)
    with dask_client(None, workers=1) as (client, _):
        settings = client.run(lambda: (os.environ.get("MALLOC_TRIM_THRESHOLD_"), os.environ.get("MALLOC_ARENA_MAX")))
    assert list(settings.values()) == [(None, "2")]
    image_config = yaml.safe_load((Path(__file__).resolve().parents[1] / "docker" / "dask.yaml").read_text())
    assert image_config["distributed"]["nanny"]["pre-spawn-environ"] == {"MALLOC_TRIM_THRESHOLD_": None,
                                                                         "MALLOC_ARENA_MAX": "2"}


def test_each_chunk_prediction_hands_what_it_freed_back_to_the_system(run_dir, slide, tmp_path, monkeypatch):
    # a worker's heap kept pieces of every chunk's tensors, so its peak crept up with the slide (README)
    trims = []
    monkeypatch.setattr(slides, "_glibc", lambda: SimpleNamespace(malloc_trim=trims.append))
    job = make_job(open_slide(slide[0]), Run.load(run_dir), tmp_path, chunk=CHUNK, margin=MARGIN)
    prepare_outputs(job)
    predict_chunk(job, 0, 0)
    assert trims == [0]
    predict_chunk(job, 0, 0)  # written before: read back, nothing to hand back
    assert trims == [0]
    monkeypatch.setattr(slides, "_glibc", lambda: None)  # a C library without malloc_trim (macOS, musl)
    predict_chunk(job, 0, 1)
    assert (job.work / "pieces_0_1.npz").exists()
