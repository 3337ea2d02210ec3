"""Predictions kept in the run folder when a run ends (issue 11, point 16): the Results page's first visitor
finds the opening image predicted; a kept prediction is used only while its checkpoints and image are current."""

import dataclasses
import os

import numpy as np
import pytest

from dashboard import images, training
from dashboard.training import submit_training
from factories import tiny_config, tiny_project_run
from impartial import results
from impartial.demo import create_demo_project
from impartial.jobs import JobManager
from impartial.pipeline import segment_prediction
from impartial.predict import Prediction, TaskPrediction
from impartial.project import Project
from impartial.results import (
    KEPT_RUNS,
    kept_cells,
    kept_prediction,
    opening_image,
    prepare_results,
    project_segmentation,
)
from impartial.runs import Run, result_files

WAIT_S = 120.0


@pytest.fixture
def trained(tmp_path):
    """A demo project of two images and one tiny run."""
    project = create_demo_project(tmp_path, n_images=2, size=64)
    return project, Run.load(project.dir / "runs" / tiny_project_run(project))


def two_task_prediction(height: int = 64, width: int = 64) -> Prediction:
    """A hand-made prediction of two tasks (two classes, then one) with cell cores."""
    rng = np.random.default_rng(0)

    def maps(count: int) -> np.ndarray:
        return rng.random((count, height, width), dtype=np.float32)
    return Prediction([TaskPrediction("cells", ["cytoplasm", "nucleus_in_cytoplasm"], maps(2), maps(2), maps(1)[0]),
                       TaskPrediction("nuclei", ["nucleus"], maps(1), maps(1), maps(1)[0])],
                      core=maps(1)[0], core_variance=maps(1)[0])


def no_prediction(*_args, **_kwargs):
    raise AssertionError("computed although a current result was kept")


def test_the_run_end_keeps_the_opening_image_and_it_is_read_back_unchanged(trained, monkeypatch):
    project, run = trained
    name = project.images()[0]
    assert opening_image(project) == name
    made = two_task_prediction()
    monkeypatch.setattr(results, "predict_image", lambda *_args: made)
    assert prepare_results(run, project) == name
    assert (run.dir / "predicted" / f"{name}.npz").exists()
    expected = segment_prediction(made, project.normalized(name), run.instance_config())

    monkeypatch.setattr(results, "predict_image", no_prediction)
    monkeypatch.setattr(results, "segment_prediction", no_prediction)
    kept = project_segmentation(run, project, name)
    assert [(task.name, task.class_names) for task in kept.prediction.tasks] == [
        ("cells", ["cytoplasm", "nucleus_in_cytoplasm"]), ("nuclei", ["nucleus"])]
    for key, value in made.arrays().items():
        assert np.array_equal(kept.prediction.arrays()[key], value), key
    assert expected.cells.max() > 0 and np.array_equal(kept.cells, expected.cells)
    assert np.array_equal(kept.nuclei, expected.nuclei)
    assert not any("predicted" in path.parts for path in result_files(run.dir))  # a cache, not a result


def test_kept_results_are_not_used_for_other_weights_another_image_file_other_settings_or_when_damaged(trained):
    project, run = trained
    name = project.images()[0]
    prepare_results(run, project)
    own = run.instance_config()
    assert kept_prediction(run, project, name) is not None and kept_cells(run, project, name, own) is not None
    assert kept_cells(run, project, name, dataclasses.replace(own, threshold=own.threshold + 0.1)) is None
    checkpoint = run.checkpoints[0]
    stat = checkpoint.stat()
    os.utime(checkpoint, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # training saved a better one
    assert kept_prediction(run, project, name) is None and kept_cells(run, project, name, own) is None
    prepare_results(run, project)
    image = project.dir / "images" / f"{name}.tif"
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # the image was replaced
    assert kept_prediction(run, project, name) is None
    (run.dir / "predicted" / f"{name}.npz").write_bytes(b"not an npz")
    assert kept_prediction(run, project, name) is None
    assert project_segmentation(run, project, name, keep=True).prediction.tasks  # computed again, kept in its place
    assert kept_cells(run, project, name, own) is not None


def test_the_results_page_reads_the_kept_prediction_and_cells(trained, monkeypatch):
    project, run = trained
    name = project.images()[0]
    prepare_results(run, project)
    images._prediction.clear()
    images._segmentation.clear()
    monkeypatch.setattr(images, "predict_image", no_prediction)
    monkeypatch.setattr(images, "segment_prediction", no_prediction)
    assert images.prediction(run, project, name).class_probabilities().keys() == {"cell"}
    chosen = run.instance_config()
    found = images.segmentation(run, project, name, round(chosen.threshold, 2))  # the slider's start
    assert np.array_equal(found.cells, kept_cells(run, project, name, chosen)[0])
    with pytest.raises(AssertionError, match="computed although"):  # other settings: the instance step runs
        images.segmentation(run, project, name, chosen.threshold + 0.1)


def test_a_dashboard_training_ends_with_the_opening_image_predicted(tmp_path, monkeypatch):
    project = create_demo_project(tmp_path, n_images=2, size=64)
    jobs = JobManager(slots=1)
    monkeypatch.setattr(training, "job_manager", lambda: jobs)
    monkeypatch.setattr(training, "job_owner", lambda: "local")
    monkeypatch.setattr(training, "user", lambda: None)
    config = project.config_defaults()
    tiny = tiny_config()
    config.model, config.train, config.predict = tiny.model, tiny.train, tiny.predict
    config.train.prior = False
    try:
        job = jobs.wait(submit_training(project, config, None), WAIT_S)
    finally:
        jobs.shutdown(wait=True)
    assert job.state == "done"
    (run,) = Project(project.dir).runs()
    assert kept_prediction(Run.load(run.dir), project, project.images()[0]) is not None


def test_only_the_newest_runs_keep_their_results(trained):
    project, run = trained
    older = [project.dir / "runs" / f"20200101-00000{index}-abcdef" for index in range(KEPT_RUNS + 1)]
    for folder in older:
        (folder / "predicted").mkdir(parents=True)
        (folder / "predicted" / "tissue_1.npz").write_bytes(b"kept")
    prepare_results(run, project)
    assert (run.dir / "predicted").is_dir()
    assert [folder.name for folder in older if (folder / "predicted").is_dir()] == \
        [folder.name for folder in older[-(KEPT_RUNS - 1):]]  # with this run's, KEPT_RUNS in all
    assert all(folder.is_dir() for folder in older)  # the runs themselves stay
