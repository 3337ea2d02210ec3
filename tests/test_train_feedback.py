"""Honest feedback on the Train page (issue 9): one training of a project at a time, time estimates before and
during a run, and scribbles that hold only one side."""

import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from dashboard import training
from dashboard.training import (
    Pace,
    active_job,
    estimate_line,
    estimated_seconds,
    measured_pace,
    patches_per_epoch,
    submit_training,
    time_left,
    training_in_progress,
)
from factories import tiny_config
from impartial.config import apply_overrides, preset_config
from impartial.demo import create_demo_project
from impartial.errors import InputError
from impartial.jobs import JobManager
from impartial.project import RunInfo, open_project
from impartial.runs import write_status
from impartial.scribbles import MissingSides, missing_sides
from impartial.train import TrainingEvent, step_pace

WAIT_S = 30.0  # generous: only reached when something is broken


# --- one-sided scribbles --------------------------------------------------------------------------

def strokes(height: int, width: int, channels: int, *stroked: int) -> np.ndarray:
    """(H, W, S) zeros with one pixel set in each of the ``stroked`` maps."""
    scribbles = np.zeros((height, width, channels), np.uint8)
    for channel in stroked:
        scribbles[channel, channel, channel] = 1
    return scribbles


def test_cells_without_background_and_background_without_cells_are_named():
    config = preset_config("quick")  # one task "cells": maps [cell, background]
    assert missing_sides([strokes(8, 8, 2, 0)], config) == [MissingSides("cells", ("cell",), ("background",))]
    assert missing_sides([strokes(8, 8, 2, 1)], config) == [MissingSides("cells", ("cell",), ("classes",))]
    assert missing_sides([strokes(8, 8, 2)], config) == [MissingSides("cells", ("cell",), ("classes", "background"))]


def test_sides_on_different_images_count_together():
    config = preset_config("quick")
    assert missing_sides([strokes(8, 8, 2, 0), strokes(5, 6, 2, 1)], config) == []


def test_each_task_needs_both_sides_and_any_of_its_classes_counts():
    tissuenet = preset_config("quick", tasks="tissuenet")  # maps [cell, bg cells, nucleus, bg nuclei]
    assert missing_sides([strokes(8, 8, 4, 0, 1, 2)], tissuenet) == [
        MissingSides("nuclei", ("nucleus",), ("background",))]
    vectra = preset_config("quick", tasks="vectra")  # [cytoplasm, bg, nucleus_in, nucleus_out, bg]
    assert missing_sides([strokes(8, 8, 5, 0, 1, 3, 4)], vectra) == []  # nucleus_in has none: allowed


def test_the_messages_say_what_to_add():
    cells_only = MissingSides("cells", ("cell",), ("background",))
    assert cells_only.message() == ("Only cell strokes, no background: add background strokes (between and around "
                                    "the cells) so the network can tell cell from background.")
    background_only = MissingSides("nuclei", ("nucleus",), ("classes",))
    assert background_only.message(several_tasks=True) == (
        "Task nuclei: Only background strokes, no nucleus: add nucleus strokes (inside the cells) so the network "
        "can tell nucleus from background.")
    assert MissingSides("cells", ("cell",), ("classes", "background")).message() == (
        "No strokes: add cell strokes and background strokes.")


def test_scribbles_in_another_layout_are_refused():
    with pytest.raises(InputError, match="expected"):
        missing_sides([strokes(8, 8, 3, 0)], preset_config("quick"))


# --- time estimates ---------------------------------------------------------------------------------

def sized(max_minutes: float = 0.0, epochs: int = 40, patches: int = 256, batch: int = 16):
    return apply_overrides(preset_config("quick"), {"train.max_minutes": max_minutes, "train.epochs": epochs,
                                                    "train.patches_per_epoch": patches, "train.batch": batch})


def test_an_epoch_trains_on_whole_batches():
    assert patches_per_epoch(sized(patches=256, batch=16)) == 256
    assert patches_per_epoch(sized(patches=250, batch=16)) == 240  # 15 batches of 16
    assert patches_per_epoch(sized(patches=8, batch=16)) == 16  # at least one batch


def test_the_estimate_is_the_budget_or_the_epochs_at_the_measured_pace():
    pace = Pace(patches_per_s=64.0, run_id="earlier")
    assert estimated_seconds(sized(epochs=40), pace) == 160.0  # 40 x 256 / 64
    assert estimated_seconds(sized(epochs=40, patches=250), pace) == 150.0  # 40 x 240 / 64
    assert estimated_seconds(sized(max_minutes=2.5), pace) == 150.0  # the budget, whatever the pace
    assert estimated_seconds(sized(max_minutes=2.5), None) == 150.0
    assert estimated_seconds(sized(epochs=40), None) is None


def test_the_estimate_line_names_its_source():
    pace = Pace(patches_per_s=64.0, run_id="20260101-000000-abcdef")
    assert estimate_line(sized(epochs=40), pace) == (
        "About 2 min 40 s of training: 40 epochs x 256 patches at 64 patches/s, the pace of run "
        "20260101-000000-abcdef here (early stopping may end it sooner).")
    assert estimate_line(sized(max_minutes=2.5), pace) == (  # 150 s x 64 / 256 = 37.5 epochs
        "Trains for its 2 min 30 s time budget: about 37 epochs at 64 patches/s, the pace of run "
        "20260101-000000-abcdef here.")
    assert estimate_line(sized(max_minutes=2.5), None) == "Trains for its 2 min 30 s time budget."
    assert estimate_line(sized(), None).startswith("No estimate yet")
    assert "2.5 patches/s" in estimate_line(sized(), Pace(2.5, "slow"))


def fake_run(root: Path, run_id: str, config, elapsed: list[float] | None) -> RunInfo:
    """A run folder with ``config`` and a history whose epochs ended at ``elapsed`` seconds (None: no history)."""
    folder = root / run_id
    folder.mkdir(parents=True)
    config.save(folder / "config.json")
    if elapsed is not None:
        rows = "".join(f"{epoch},0,{seconds},1,1,0,0,1,1,0.001\n" for epoch, seconds in enumerate(elapsed, 1))
        (folder / "history.csv").write_text("epoch,cycle,elapsed_s,scribble,rec,reg,sep,total,val,lr\n" + rows)
    return RunInfo(id=run_id, dir=folder, status={})


def test_the_pace_comes_from_the_newest_run_of_the_same_network(tmp_path):
    config = sized(patches=256, batch=16)
    deeper = apply_overrides(sized(), {"model.depth": 4})
    runs = [fake_run(tmp_path, "5-other-network", deeper, [1.0]),
            fake_run(tmp_path, "4-no-epoch-yet", sized(), []),
            fake_run(tmp_path, "3-no-history", sized(), None),
            fake_run(tmp_path, "2-same", sized(patches=128), [2.0, 4.0, 6.0, 8.0]),
            fake_run(tmp_path, "1-older", sized(), [1.0])]
    (tmp_path / "6-queued").mkdir()  # no config yet
    runs.insert(0, RunInfo(id="6-queued", dir=tmp_path / "6-queued", status={}))
    # run 2: 4 epochs x 128 patches in 8 s; the patches per epoch may differ, the network may not
    assert measured_pace(runs, config) == Pace(64.0, "2-same")
    assert measured_pace(runs, deeper) == Pace(256.0, "5-other-network")
    assert measured_pace(runs, apply_overrides(sized(), {"train.precision": "float32"})) is None


def test_a_damaged_history_is_passed_over(tmp_path):
    broken = fake_run(tmp_path, "2-broken", sized(), None)
    (broken.dir / "history.csv").write_text("no,epochs\n\"unclosed")
    assert measured_pace([broken, fake_run(tmp_path, "1-good", sized(), [4.0])], sized()) == Pace(64.0, "1-good")


def test_time_left_is_estimating_until_the_first_epoch_then_follows_the_pace():
    assert time_left({}, "new") == "remaining: estimating (the run is starting)"
    assert time_left({"epoch": 0, "remaining_s": None, "updated": 1000.0}, "running", now=1049.0) == (
        "remaining: estimating (known once the first epoch is timed)")
    after_two = {"epoch": 2, "elapsed_s": 20.0, "remaining_s": 100.0, "updated": 1000.0}
    assert time_left(after_two, "running", now=1000.0) == "remaining about 1 min 40 s"
    assert time_left(after_two, "running", now=1030.0) == "remaining about 1 min 10 s"  # counted down since
    assert time_left(after_two, "running", now=1200.0) == "remaining about 0 s"  # an epoch slower than the last


def test_time_left_with_a_budget_ends_at_the_budget():
    budgeted = {"epoch": 0, "elapsed_s": 120.0, "remaining_s": 180.0, "budget_s": 300.0, "updated": 1000.0}
    assert time_left(budgeted, "running", now=1010.0) == "remaining about 2 min 50 s (the run ends at its time budget)"
    assert time_left(budgeted, "running", now=2000.0) == "remaining about 0 s (the run ends at its time budget)"


# --- one training of a project at a time ----------------------------------------------------------

class BlockingTrainer:
    """Stands in for the Trainer: runs until ``release`` is set."""

    started = threading.Event()
    release = threading.Event()

    def __init__(self, config, dataset, folder, **kwargs):
        self.folder = Path(folder)

    def run(self) -> SimpleNamespace:
        BlockingTrainer.started.set()
        BlockingTrainer.release.wait(WAIT_S)
        return SimpleNamespace(dir=self.folder, checkpoints=[])  # a run without checkpoints: nothing to score


@pytest.fixture
def manager(data_root, monkeypatch):
    """The dashboard's job manager (one slot) with a blocking trainer; every job is released at the end."""
    jobs = JobManager(slots=1)
    monkeypatch.setattr(training, "job_manager", lambda: jobs)
    monkeypatch.setattr(training, "job_owner", lambda: "local")
    monkeypatch.setattr(training, "user", lambda: None)
    monkeypatch.setattr(training, "Trainer", BlockingTrainer)
    BlockingTrainer.started.clear()
    BlockingTrainer.release.clear()
    yield jobs
    BlockingTrainer.release.set()
    jobs.shutdown(wait=True)


def test_a_second_start_while_the_project_trains_is_refused_and_the_running_job_stays_active(data_root, manager):
    project = create_demo_project(data_root, n_images=1, size=64)
    first = submit_training(project, project.config_defaults(), None)
    assert BlockingTrainer.started.wait(WAIT_S)
    assert training_in_progress(project) == ("A training of demo is running: stop it or wait for it to end before "
                                             "starting another.")
    with pytest.raises(InputError, match="is running"):
        submit_training(project, project.config_defaults(), None)
    assert [job.id for job in manager.jobs(project="demo")] == [first]
    assert active_job(project).id == first
    BlockingTrainer.release.set()
    assert manager.wait(first, WAIT_S).state == "done"
    assert training_in_progress(project) is None


def test_a_queued_training_blocks_a_second_one_too(data_root, manager):
    create_demo_project(data_root, name="other", n_images=1, size=64)
    project = create_demo_project(data_root, n_images=1, size=64)
    busy = submit_training(open_project(data_root, "other"), project.config_defaults(), None)  # takes the slot
    assert BlockingTrainer.started.wait(WAIT_S)
    queued = submit_training(project, project.config_defaults(), None)
    assert manager.job(queued).state == "queued"
    with pytest.raises(InputError, match="waiting in the queue"):
        submit_training(project, project.config_defaults(), None)
    assert [job.id for job in manager.jobs(project="demo")] == [queued]
    assert manager.job(busy).state == "running"


def test_the_running_job_is_the_active_one_even_with_another_queued(data_root, manager):
    project = create_demo_project(data_root, n_images=1, size=64)
    running = manager.submit("local", "demo", "train · demo", lambda ctx: BlockingTrainer(None, None, ".").run())
    assert BlockingTrainer.started.wait(WAIT_S)
    queued = manager.submit("local", "demo", "train · demo", lambda ctx: None)  # bypassing submit_training
    assert manager.job(queued).state == "queued"
    assert active_job(project).id == running  # its progress and Stop button stay on the page


def test_a_run_training_outside_the_dashboard_blocks_start(data_root, manager):
    project = create_demo_project(data_root, n_images=1, size=64)
    folder = project.new_run_dir()
    write_status(folder, "running", epoch=3)  # this process, fresh heartbeat: a live command-line run
    with pytest.raises(InputError, match=f"Run {folder.name} of demo is training"):
        submit_training(project, project.config_defaults(), None)
    assert manager.jobs() == []
    write_status(folder, "done", epoch=10)
    assert training_in_progress(project) is None


@pytest.mark.parametrize(("keep", "missing"), [(0, "add background strokes"), (1, "add cell strokes")])
def test_one_sided_scribbles_are_refused_before_anything_is_queued(data_root, manager, keep, missing):
    project = create_demo_project(data_root, n_images=2, size=64)
    for name in project.scribbled_images():
        scribbles = project.load_scribbles(name)
        scribbles[..., 1 - keep] = 0  # keep only the cell map (0) or only the background map (1)
        project.save_scribbles(name, scribbles)
    with pytest.raises(InputError, match=missing):
        submit_training(project, project.config_defaults(), None)
    assert manager.jobs() == [] and not list((project.dir / "queue").glob("*.json"))


def test_two_starts_at_once_queue_one_training(data_root, manager, monkeypatch):
    project = create_demo_project(data_root, n_images=1, size=64)
    both_checked = threading.Barrier(2, timeout=WAIT_S)  # both sessions passed the first check before either queues
    reading = project.training_set

    def slow_training_set(config):
        both_checked.wait()
        return reading(config)

    monkeypatch.setattr(project, "training_set", slow_training_set)
    outcomes: list[str] = []

    def press_start() -> None:
        try:
            outcomes.append(submit_training(project, project.config_defaults(), None))
        except InputError as error:
            outcomes.append(str(error))

    sessions = [threading.Thread(target=press_start) for _ in range(2)]
    for session in sessions:
        session.start()
    for session in sessions:
        session.join(WAIT_S)
    assert len(manager.jobs(project="demo")) == 1
    assert sorted(outcome.startswith("A training of demo is") for outcome in outcomes) == [False, True]


# --- the Train page -------------------------------------------------------------------------------

APP = str(Path(__file__).resolve().parents[1] / "app.py")
PAGE_TIMEOUT_S = 60  # the first run imports torch


def train_page() -> AppTest:
    """The app with the demo project open, switched to the Train page."""
    app = AppTest.from_file(APP, default_timeout=PAGE_TIMEOUT_S)
    app.session_state["project"] = "demo"
    app.run()
    app.switch_page("views/3_Train.py").run()
    assert not app.exception, app.exception
    return app


def start_button(app: AppTest):
    return next(button for button in app.button if button.label == "Start training")


def column_with(app: AppTest, subheader: str):
    """The page column whose subheader is ``subheader``."""
    return next(column for column in app.columns if any(item.value == subheader for item in column.subheader))


class ReportingTrainer(BlockingTrainer):
    """A blocking trainer that has finished one epoch of a 10-epoch run and says so as the real one does: in
    status.json and to its listener."""

    def __init__(self, config, dataset, folder, on_event, **kwargs):
        super().__init__(config, dataset, folder)
        self.on_event = on_event

    def run(self):
        timing = {"epoch": 1, "total_epochs": 10, "elapsed_s": 5.0, "remaining_s": 45.0}
        write_status(self.folder, "running", **timing)
        self.on_event(TrainingEvent(kind="epoch", **timing))
        run = super().run()
        write_status(self.folder, "done", **timing)
        return run


def test_while_the_project_trains_start_is_off_and_the_run_stays_in_view(data_root, manager, monkeypatch):
    monkeypatch.setattr(training, "Trainer", ReportingTrainer)
    project = create_demo_project(data_root, n_images=1, size=64)
    job_id = submit_training(project, project.config_defaults(), None)
    assert BlockingTrainer.started.wait(WAIT_S)
    app = train_page()
    assert start_button(app).disabled
    assert any("A training of demo is running" in item.value for item in app.info)
    progress = column_with(app, "Progress")
    assert [button.label for button in progress.button] == ["Stop"]
    assert any(item.value.startswith("**Run `") and "running" in item.value for item in progress.markdown)
    assert any("remaining about" in item.value for item in progress.caption)
    assert len(manager.jobs(project="demo")) == 1
    BlockingTrainer.release.set()
    assert manager.wait(job_id, WAIT_S).state == "done"
    assert not start_button(train_page()).disabled


def test_one_sided_scribbles_warn_on_the_train_page_and_start_is_off(data_root):
    project = create_demo_project(data_root, n_images=2, size=64)
    for name in project.scribbled_images():
        scribbles = project.load_scribbles(name)
        scribbles[..., 1] = 0  # no background strokes left
        project.save_scribbles(name, scribbles)
    app = train_page()
    assert [item.value for item in app.warning] == [
        "Only cell strokes, no background: add background strokes (between and around the cells) so the network "
        "can tell cell from background. Start is off until then."]
    assert start_button(app).disabled


def test_the_form_shows_plain_settings_and_keeps_the_methods_knobs_under_advanced(data_root):
    create_demo_project(data_root, n_images=1, size=64)
    app = train_page()
    (advanced,) = app.expander
    assert advanced.label.startswith("Advanced")
    hidden = {item.label for item in advanced.number_input} | {item.label for item in advanced.checkbox}
    assert {"Foreground weight (wfore)", "Background weight (wback)", "Reconstruction weight (wrec)",
            "Smoothness weight (wreg)", "Ensemble cycles (nsaves)", "MC-dropout passes (mcdrop)",
            "Start from the pretrained cell prior"} <= hidden
    plain = {item.label for item in app.number_input} - hidden
    assert {"Time budget, minutes (0 = train for Epochs)", "Epochs"} <= plain
    assert {"Preview image", "Start from"} <= {item.label for item in app.selectbox}
    assert not {"Preview image", "Start from"} & {item.label for item in advanced.selectbox}
    assert all(item.help for item in [*app.number_input, *app.selectbox, *app.checkbox])


def test_the_estimate_before_start_uses_an_earlier_runs_pace_and_follows_the_time_budget(data_root):
    project = create_demo_project(data_root, n_images=1, size=64)
    config = project.config_defaults()  # the quick preset: 40 epochs of 256 patches
    earlier = fake_run(project.dir / "runs", "20260101-000000-abcdef", config, [2.0, 4.0, 6.0, 8.0])
    write_status(earlier.dir, "done", epoch=4, total_epochs=4, elapsed_s=8.0)
    app = train_page()  # 4 epochs x 256 patches in 8 s: 128 patches/s
    assert ("About 1 min 20 s of training: 40 epochs x 256 patches at 128 patches/s, the pace of run "
            "20260101-000000-abcdef here (early stopping may end it sooner).") in [item.value for item in app.caption]
    app.number_input(key="train.max_minutes-quick").set_value(2.0).run()  # 120 s x 128 / 256 = 60 epochs
    assert ("Trains for its 2 min 00 s time budget: about 60 epochs at 128 patches/s, the pace of run "
            "20260101-000000-abcdef here.") in [item.value for item in app.caption]
    app.number_input(key="train.max_minutes-quick").set_value(-1.0).run()  # refused on Start: no estimate
    assert not app.exception, app.exception
    assert not [item.value for item in app.caption if "time budget" in item.value or "of training" in item.value]


def test_before_any_run_the_estimate_times_a_few_steps_on_this_device(data_root, monkeypatch):
    project = create_demo_project(data_root, n_images=1, size=64)
    timed = []
    monkeypatch.setattr(training, "step_pace", lambda config, device: timed.append(config.preset) or 64.0)
    training._device_pace.clear()
    app = train_page()  # 40 epochs x 256 patches at 64 patches/s: 160 s
    assert ("About 2 min 40 s of training: 40 epochs x 256 patches at 64 patches/s, timed on this device just now "
            "(early stopping may end it sooner).") in [item.value for item in app.caption]
    app.run()
    assert timed == ["quick"]  # once per network and setting on this server, not on every rerun
    assert not project.runs()


def test_the_step_pace_is_measured_on_real_training_steps():
    pace = step_pace(tiny_config(), torch.device("cpu"), batches=1)
    assert np.isfinite(pace) and pace > 0


def test_resume_sits_in_the_progress_column(data_root):
    project = create_demo_project(data_root, n_images=1, size=64)
    folder = project.new_run_dir()
    write_status(folder, "stopped", epoch=3, total_epochs=10)
    (folder / "state.pt").write_bytes(b"")
    app = train_page()
    assert [button.label for button in column_with(app, "Progress").button] == ["Resume"]
    assert "Resume" not in [button.label for button in app.columns[0].button]
