"""The command line end to end on generated data, and its messages for bad input."""

import json

import numpy as np
import pandas as pd
import pytest
from shapely.geometry import shape

from impartial.cli import main
from impartial.export import load_prediction_npz

TINY = ["--preset", "quick", "--depth", "2", "--base", "8", "--epochs", "2", "--patch", "48",
        "--patches-per-epoch", "16", "--batch", "8", "--nsaves", "1", "--mcdrop", "2",
        "--tile", "64", "--overlap", "16"]


@pytest.fixture
def demo(tmp_path):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--images", "3", "--size", "96"]) == 0
    return tmp_path / "demo"


def test_demo_writes_a_dataset(demo):
    files = pd.read_csv(demo / "files.csv")
    assert list(files.group) == ["train", "train", "test"]
    assert {"image", "scribbles", "labels", "group", "prefix", "input_file"} <= set(files.columns)
    assert (demo / "scribble_table.csv").exists()


def test_train_predict_evaluate(demo, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--files", str(demo / "files.csv"), "--out", str(run), *TINY]) == 0
    assert "done" in capsys.readouterr().out
    out = tmp_path / "pred"
    assert main(["predict", "--run", str(run), "--out", str(out), str(demo / "images" / "demo_2.tif")]) == 0
    arrays = load_prediction_npz(out / "demo_2.npz")
    assert {"class_segmentation", "class_segmentation_variance", "entropy", "instances"} <= set(arrays)
    assert arrays["class_segmentation"].shape == (1, 96, 96)
    for name in ("demo_2_cells.csv", "demo_2_labels.tif", "demo_2_rois.zip"):
        assert (out / name).exists()
    collection = json.loads((out / "demo_2_cells.geojson").read_text())  # cell outlines for QuPath
    cells = pd.read_csv(out / "demo_2_cells.csv")
    assert collection["type"] == "FeatureCollection" and len(collection["features"]) == len(cells) > 0
    first = collection["features"][0]
    assert shape(first["geometry"]).is_valid and first["properties"]["measurements"]["area"] == cells["area"][0]
    capsys.readouterr()
    assert main(["evaluate", "--run", str(run), "--files", str(demo / "files.csv")]) == 0
    table = capsys.readouterr().out
    assert "f1" in table and "demo_2.tif" in table and "mean" in table


def test_a_time_budget_sets_the_runs_length_and_the_bar_counts_its_seconds(demo, tmp_path, capsys):
    run = tmp_path / "run"
    # TINY asks for 2 epochs; a budget of 1e-6 min is spent by the first, which ends the run
    assert main(["train", "--files", str(demo / "files.csv"), "--out", str(run), *TINY, "--max-minutes", "1e-6"]) == 0
    printed = capsys.readouterr()
    assert "s of the time budget" in printed.err and "done: time budget reached" in printed.out
    assert len(pd.read_csv(run / "history.csv")) == 1


def test_scribbles_from_labels(demo, tmp_path):
    out = tmp_path / "scribbled"
    assert main(["scribbles", "--files", str(demo / "files.csv"), "--out", str(out), "--fraction", "0.3"]) == 0
    files = pd.read_csv(out / "files.csv")
    assert files.scribbles.notna().all()
    with np.load(out / files.scribbles[0], allow_pickle=False) as saved:  # paths are relative to the csv
        assert saved["scribble"].shape == (96, 96, 2) and saved["scribble"].any()


def test_corrupt_image_gives_one_line_naming_it(demo, tmp_path, capsys):
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"II*\x00 this is not a tiff")
    run = tmp_path / "run"
    assert main(["train", "--files", str(demo / "files.csv"), "--out", str(run), *TINY]) == 0
    capsys.readouterr()
    assert main(["predict", "--run", str(run), "--out", str(tmp_path / "p"), str(broken)]) == 2
    error = capsys.readouterr().err
    assert "broken.tif" in error and "Traceback" not in error and len(error.strip().splitlines()) == 1


def test_bad_flag_value_is_reported(demo, tmp_path, capsys):
    assert main(["train", "--files", str(demo / "files.csv"), "--out", str(tmp_path / "r"), "--ratio", "2"]) == 2
    assert "ratio" in capsys.readouterr().err


def test_missing_run_folder(tmp_path, capsys):
    assert main(["predict", "--run", str(tmp_path / "nope"), "--out", str(tmp_path), str(tmp_path / "x.tif")]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_a_project_run_waits_for_the_device_then_shows_in_the_project(tmp_path, capsys):
    import threading
    import time

    import torch

    from impartial.demo import create_demo_project
    from impartial.devicelock import device_turn

    project = create_demo_project(tmp_path / "data", n_images=2, size=96)
    command = ["train", "--project", str(project.dir), "--device", "cpu", *TINY]
    errors = ""
    with device_turn(project.data_root, torch.device("cpu"), "train of demo by ann"):  # a dashboard job
        waiter = threading.Thread(target=main, args=(command,))
        waiter.start()
        deadline = time.monotonic() + 60
        while "waiting for the device" not in errors and time.monotonic() < deadline:
            errors += capsys.readouterr().err
            time.sleep(0.1)
        assert project.runs()[0].status["state"] == "new"  # listed, not started
    waiter.join(120)
    assert "waiting for the device: train of demo by ann (started " in errors
    (run,) = project.runs()  # the dashboard lists the command-line run
    assert run.status["state"] == "done" and (run.dir / "checkpoints" / "cycle_0.pt").exists()
    assert (run.dir / "predicted" / f"{project.images()[0]}.npz").exists()  # the Results page opens on it


@pytest.mark.parametrize("flags, problem", [(["--threads", "-1"], "train.threads"), (["--seed", "-1"], "train.seed"),
                                            (["--lr", "inf"], "train.lr must be finite")])
def test_bad_training_numbers_get_one_line(demo, tmp_path, capsys, flags, problem):
    assert main(["train", "--files", str(demo / "files.csv"), "--out", str(tmp_path / "r"), *flags]) == 2
    error = capsys.readouterr().err
    assert problem in error and "Traceback" not in error and len(error.strip().splitlines()) == 1


def test_bad_prediction_arguments_get_one_line(demo, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--files", str(demo / "files.csv"), "--out", str(run), *TINY]) == 0
    image = str(demo / "images" / "demo_3.tif")
    a_file = tmp_path / "not_a_folder"
    a_file.write_text("")
    capsys.readouterr()
    assert main(["predict", "--run", str(run), "--out", str(a_file), image]) == 2
    assert "--out must be a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        main(["predict", "--run", str(run), "--out", str(tmp_path / "p"), "--mcdrop", "0", image])
    assert stop.value.code == 2
    assert "--mcdrop: must be at least 1, got 0" in capsys.readouterr().err
    assert main(["predict", "--run", str(run), "--out", str(tmp_path / "p"), "--formats", "csv,pdf", image]) == 2
    assert "--formats: unknown pdf" in capsys.readouterr().err


def test_a_project_run_stopped_while_waiting_for_the_device_leaves_no_empty_run(tmp_path, capsys, monkeypatch):
    import contextlib

    from impartial import cli
    from impartial.demo import create_demo_project

    @contextlib.contextmanager
    def interrupted_wait(*args):
        raise KeyboardInterrupt  # Ctrl+C while another job holds the device
        yield

    monkeypatch.setattr(cli, "_device_turn", interrupted_wait)
    project = create_demo_project(tmp_path / "data", n_images=1, size=96)
    assert main(["train", "--project", str(project.dir), "--device", "cpu", *TINY]) == 130
    assert "nothing to resume" in capsys.readouterr().err
    assert project.runs() == []


def test_scribbles_from_imagej_roi_labels(demo, tmp_path):
    # the demo's first label image, written as an ImageJ ROI zip (outlines carry no image size)
    from impartial.export import save_roi_zip
    from impartial.io import read_labels

    files = pd.read_csv(demo / "files.csv")
    labels = read_labels(demo / files.labels[0])
    save_roi_zip(tmp_path / "cells_rois.zip", labels)
    rows = pd.DataFrame([{"image": str((demo / files.image[0]).resolve()),
                          "labels": str(tmp_path / "cells_rois.zip"), "scribbles": "", "group": "test"}])
    rows.to_csv(tmp_path / "files.csv", index=False)
    assert main(["scribbles", "--files", str(tmp_path / "files.csv"), "--out", str(tmp_path / "out")]) == 0
    scribbled = pd.read_csv(tmp_path / "out" / "files.csv")
    with np.load(tmp_path / "out" / scribbled.scribbles[0], allow_pickle=False) as saved:
        assert saved["scribble"].shape == (96, 96, 2) and saved["scribble"][..., 0].any()


def test_training_with_cell_strokes_only_is_refused_in_one_line_and_leaves_no_run(tmp_path, capsys):
    from impartial.demo import create_demo_project

    project = create_demo_project(tmp_path, n_images=2, size=64)
    for name in project.images():
        scribbles = project.load_scribbles(name)
        scribbles[..., 1] = 0  # no background strokes anywhere
        project.save_scribbles(name, scribbles)
    assert main(["train", "--project", str(project.dir), *TINY]) == 2
    error = capsys.readouterr().err
    assert "Only cell strokes, no background: add background strokes" in error
    assert not (project.dir / "runs").exists() or not any((project.dir / "runs").iterdir())
