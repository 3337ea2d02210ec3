"""Live mode: strokes drawn while a run trains reach it at the next epoch; the preview follows the focus."""

import threading

from factories import tiny_config
from impartial.demo import create_demo_project
from impartial.live import ProjectLiveData, live_config
from impartial.runs import focus, read_preview, read_status, set_focus
from impartial.strokes import Stroke
from impartial.train import Trainer


def demo_project(tmp_path):
    project = create_demo_project(tmp_path, n_images=2, size=96)
    config = project.config_defaults()
    tiny = tiny_config(**{"train.epochs": 4})
    config.model, config.train, config.predict = tiny.model, tiny.train, tiny.predict
    config.train.prior, config.train.preview_every = False, 1
    return project, config


def test_a_stroke_drawn_during_a_live_run_is_trained_on_and_the_preview_follows_the_focus(tmp_path):
    project, config = demo_project(tmp_path)
    run_dir = project.new_run_dir()
    set_focus(run_dir, "tissue_2")
    live = ProjectLiveData(project, config, run_dir)
    stroke = Stroke(((40.5, 10.5), (40.5, 30.5)), 3.0, 0)

    def draw_after_the_first_epoch(event):
        if event.kind == "epoch" and event.epoch == 1:
            project.draw_stroke("tissue_1", stroke, "ann", "live-stroke")

    trainer = Trainer(config, project.training_set(config), run_dir, on_event=draw_after_the_first_epoch, live=live)
    assert not trainer.dataset[0].scribbles[40, 10:31, 0].all()
    trainer.run()
    now = {item.name: item for item in trainer.dataset}
    assert now["tissue_1"].scribbles[40, 10:31, 0].all()  # the sampler's images are the new ones
    assert live.updated_dataset() is None  # and nothing newer is waiting
    preview = read_preview(run_dir)
    assert preview.image == "tissue_2" and preview.epoch == 4 and preview.probabilities.shape[1:] == (96, 96)


def test_turning_live_mode_off_ends_the_run_as_done_with_thresholds(tmp_path):
    project, config = demo_project(tmp_path)
    config.train.epochs = 1000
    run_dir = project.new_run_dir()
    stop = threading.Event()

    def stop_after_two_epochs(event):
        if event.kind == "epoch" and event.epoch == 2:
            stop.set()

    run = Trainer(config, project.training_set(config), run_dir, on_event=stop_after_two_epochs, stop_event=stop,
                  live=ProjectLiveData(project, config, run_dir)).run()
    assert read_status(run_dir)["state"] == "done" and read_status(run_dir)["message"] == "live mode ended"
    assert run.checkpoints and set(run.thresholds) >= {"threshold"}


def test_the_live_configuration_is_quick_short_and_keeps_the_projects_tasks(tmp_path):
    project, _ = demo_project(tmp_path)
    config = live_config(project, minutes=5)
    assert config.preset == "quick" and config.train.max_minutes == 5 and config.train.nsaves == 1
    assert config.train.preview_every == 1 and config.tasks == project.config_defaults().tasks
    assert focus(tmp_path) is None
    set_focus(tmp_path, "tissue_1")
    assert focus(tmp_path) == "tissue_1"
