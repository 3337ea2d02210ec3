"""The learning curve of a project, scores on unseen labelled images, the methods export and restoring from it."""

import io
import json
import shutil
import zipfile

import numpy as np
import pytest
from test_app import open_page

from factories import tiny_config
from impartial.demo import create_demo_project
from impartial.errors import InputError
from impartial.learning import learning_curve, methods_export, restore_scribbles, score_on_labelled_images
from impartial.project import Project
from impartial.runs import Run
from impartial.train import Trainer


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """A demo project of three labelled images, one left unscribbled, and two tiny runs on the other two."""
    root = tmp_path_factory.mktemp("learning")
    project = create_demo_project(root, n_images=3, size=96)
    project.save_scribbles("tissue_3", np.zeros_like(project.load_scribbles("tissue_3")))
    config = project.config_defaults()
    tiny = tiny_config()
    config.model, config.train, config.predict = tiny.model, tiny.train, tiny.predict
    config.train.prior = False
    runs = []
    for minutes in (2.0, 5.0):
        run = Trainer(config, project.training_set(config), project.new_run_dir(), annotation_minutes=minutes).run()
        runs.append(run)
    return project, runs


def test_runs_are_scored_on_labelled_images_they_did_not_train_on(two_runs):
    project, runs = two_runs
    scores = score_on_labelled_images(runs[0], project)
    assert list(scores) == ["tissue_3"] and 0.0 <= scores["tissue_3"]["f1"] <= 1.0
    curve = learning_curve(project)
    assert list(curve["run"]) == [run.dir.name for run in runs]  # oldest first
    assert list(curve["annotation_minutes"]) == [2.0, 5.0]
    assert curve.loc[0, "f1_unseen"] == pytest.approx(scores["tissue_3"]["f1"]) and curve.loc[0, "unseen_images"] == 1
    assert np.isnan(curve.loc[1, "f1_unseen"])  # not scored yet
    assert (curve["strokes"] > 0).all() and curve["validation_accuracy"].between(0, 1).all()


def test_the_methods_export_holds_what_it_lists_and_restores_the_exact_scribbles(two_runs, tmp_path):
    project, runs = two_runs
    data = methods_export(runs[1], learning_curve(project), "CPU, 2 threads")
    archive = zipfile.ZipFile(io.BytesIO(data))
    names = set(archive.namelist())
    assert {"config.json", "thresholds.json", "quality.json", "training_data.json", "history.csv",
            "learning_curve.csv", "environment.json", "scribbles/tissue_1.npz", "scribbles/tissue_2.npz"} <= names
    environment = json.loads(archive.read("environment.json"))
    assert environment["device"] == "CPU, 2 threads" and "torch" in environment and "python" in environment
    (tmp_path / "methods.zip").write_bytes(data)

    copy = Project(shutil.copytree(project.dir, tmp_path / "copy" / "projects" / project.name))
    for name in ("tissue_1", "tissue_2"):  # the scribbles change after the run ...
        copy.save_scribbles(name, np.zeros_like(copy.load_scribbles(name)))
    assert restore_scribbles(tmp_path / "methods.zip", copy, user="ann") == ["tissue_1", "tissue_2"]
    config = Run.load(runs[1].dir).config
    for item in copy.training_set(config):  # ... and training from the export sees the very same ones
        kept = np.load(runs[1].dir / "scribbles" / f"{item.name}.npz")
        np.testing.assert_array_equal(item.scribbles, kept["scribble"])
        np.testing.assert_array_equal(item.val_mask, kept["val_mask"])


def test_restoring_refuses_what_does_not_fit_and_changes_nothing(two_runs, tmp_path):
    project, runs = two_runs
    copy = Project(shutil.copytree(project.dir, tmp_path / "copy" / "projects" / project.name))
    copy.delete_image("tissue_2")
    before = copy.load_scribbles("tissue_1").copy()
    with pytest.raises(InputError, match="tissue_2"):
        restore_scribbles(runs[0], copy)
    np.testing.assert_array_equal(copy.load_scribbles("tissue_1"), before)
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="methods export"):
        restore_scribbles(tmp_path / "junk.zip", copy)


def test_the_train_page_shows_the_learning_curve_after_two_runs(trained_root):
    app = open_page("3_Train.py", project="demo")
    assert not app.exception, app.exception
    titles = [json.loads(chart.proto.spec)["layout"].get("title", {}).get("text") for chart in app.get("plotly_chart")]
    assert "Learning curve: does more scribbling still help?" in titles
