"""Queued trainings survive a server restart as request files: reported as not started, queued again or discarded."""

import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from dashboard import training
from dashboard.training import discard_request, lost_requests, queue_again, stop_job, submit_training
from factories import serve_data_root
from impartial.config import RunConfig
from impartial.demo import create_demo_project
from impartial.jobs import JobContext, JobManager

APP = str(Path(__file__).resolve().parents[1] / "app.py")
WAIT_S = 30.0  # generous: only reached when something is broken
PAGE_TIMEOUT_S = 60


class FakeTrainer:
    """Stands in for the Trainer: records what it was given; blocks while ``hold`` is cleared."""

    runs: list[tuple[RunConfig, Path]] = []
    started = threading.Event()
    hold = threading.Event()

    def __init__(self, config, dataset, folder, **kwargs):
        self.config, self.folder = config, Path(folder)

    def run(self) -> SimpleNamespace:
        FakeTrainer.runs.append((self.config, self.folder))
        FakeTrainer.started.set()
        FakeTrainer.hold.wait(WAIT_S)
        return SimpleNamespace(dir=self.folder, checkpoints=[])  # a run without checkpoints: nothing to score


@pytest.fixture
def root(tmp_path, monkeypatch):
    """A fresh data root, access control off, and no real training."""
    serve_data_root(monkeypatch, tmp_path)
    monkeypatch.setattr(training, "Trainer", FakeTrainer)
    FakeTrainer.runs = []
    FakeTrainer.started.clear()
    FakeTrainer.hold.set()
    return tmp_path


@pytest.fixture
def server(monkeypatch):
    """``server()`` starts a job manager as the dashboard's (a new one = the server restarted) with one busy slot;
    returns the manager and the event that frees the slot."""
    managers = []

    def start() -> tuple[JobManager, threading.Event]:
        manager = JobManager(slots=1)
        managers.append(manager)
        monkeypatch.setattr(training, "job_manager", lambda: manager)
        monkeypatch.setattr(training, "job_owner", lambda: "local")
        monkeypatch.setattr(training, "user", lambda: None)
        started, release = threading.Event(), threading.Event()

        def busy(ctx: JobContext) -> None:
            started.set()
            while not release.wait(0.01) and not ctx.stop_requested:
                pass

        manager.submit("someone", "elsewhere", "busy", busy)
        assert started.wait(WAIT_S)
        return manager, release

    yield start
    for manager in managers:
        manager.shutdown(wait=True)


def queued_files(project) -> list[Path]:
    return sorted((project.dir / "queue").glob("*.json"))


def queue_one(root: Path, server) -> tuple:
    """A demo project and one training queued behind a busy slot."""
    project = create_demo_project(root, n_images=1, size=64)
    manager, release = server()
    config = project.config_defaults()
    config.train.epochs = 3
    job_id = submit_training(project, config, project.images()[0])
    assert manager.job(job_id).state == "queued"
    return project, manager, release, config, job_id


def test_a_request_queued_before_a_restart_is_reported_and_runs_when_queued_again(root, server):
    project, first, _, config, _ = queue_one(root, server)
    assert len(queued_files(project)) == 1
    assert lost_requests([project]) == []  # this server still holds the job

    first.shutdown(wait=True)  # the old server is gone; its queue with it
    second, release = server()
    (request,) = lost_requests([project])
    assert (request.project, request.label, request.owner) == ("demo", "train", "local")
    assert request.preview_name == project.images()[0]
    assert RunConfig.from_dict(request.config) == config

    job_id = queue_again(request)
    assert second.job(job_id).state == "queued"
    assert lost_requests([project]) == []  # the old request is gone, the new one belongs to this server
    assert len(queued_files(project)) == 1
    release.set()
    assert second.wait(job_id, WAIT_S).state == "done"
    ((trained, folder),) = FakeTrainer.runs
    assert trained.train.epochs == 3 and folder.parent == project.dir / "runs"
    assert queued_files(project) == []


def test_a_lost_request_can_be_discarded(root, server):
    project, first, _, _, _ = queue_one(root, server)
    first.shutdown(wait=True)
    server()
    (request,) = lost_requests([project])
    discard_request(request)
    assert lost_requests([project]) == [] and queued_files(project) == []


def test_a_started_job_leaves_no_request_file(root, server):
    project, manager, release, _, job_id = queue_one(root, server)
    FakeTrainer.hold.clear()
    release.set()
    assert FakeTrainer.started.wait(WAIT_S)
    assert manager.job(job_id).state == "running"
    assert queued_files(project) == []  # its run folder took over
    FakeTrainer.hold.set()
    assert manager.wait(job_id, WAIT_S).state == "done"


def test_a_cancelled_queued_job_leaves_no_request_file(root, server):
    project, manager, _, _, job_id = queue_one(root, server)
    stop_job(manager.job(job_id))
    assert manager.job(job_id).state == "cancelled"
    assert queued_files(project) == []
    assert lost_requests([project]) == []


def test_a_request_file_left_by_an_ended_job_of_this_server_is_not_reported(root, server):
    project, manager, _, _, job_id = queue_one(root, server)
    manager.cancel(job_id, None)  # not through the dashboard: the file stays until the queue is read
    assert lost_requests([project]) == []
    assert queued_files(project) == []


def test_the_projects_page_lists_only_the_viewers_lost_requests_and_queues_them_again(root, server, monkeypatch):
    monkeypatch.setenv("IMPARTIAL_PASSWORD", "lab-secret")
    monkeypatch.setattr(training, "Trainer", FakeTrainer)
    alice = create_demo_project(root, name="alice-study", n_images=1, size=64, owner="alice@lab.org")
    bob = create_demo_project(root, name="bob-secret", n_images=1, size=64, owner="bob@lab.org")
    first, _ = server()
    for project in (alice, bob):
        monkeypatch.setattr(training, "job_owner", lambda owner=project.owner: owner)
        submit_training(project, project.config_defaults(), None)
    first.shutdown(wait=True)
    monkeypatch.undo()  # the page uses its own job manager, user and data root
    monkeypatch.setenv("IMPARTIAL_DATA", str(root))
    monkeypatch.setenv("IMPARTIAL_PASSWORD", "lab-secret")
    monkeypatch.setattr(training, "Trainer", FakeTrainer)
    st.cache_resource.clear()  # a fresh server process: a new job manager

    app = AppTest.from_file(APP, default_timeout=PAGE_TIMEOUT_S)
    app.session_state["impartial_user"] = "alice@lab.org"
    app.run()
    assert not app.exception, app.exception
    page = " ".join(element.value for element in app.markdown)
    assert "not started (the server restarted)" in page and "alice-study" in page
    assert "bob" not in page
    assert [button.label for button in app.button if button.label in ("Queue again", "Discard")] == [
        "Queue again", "Discard"]

    next(button for button in app.button if button.label == "Queue again").click().run()
    assert not app.exception, app.exception
    assert FakeTrainer.started.wait(WAIT_S)
    assert FakeTrainer.runs[0][1].parent == alice.dir / "runs"
    assert len(queued_files(bob)) == 1  # bob's request waits for bob
    assert "not started" not in " ".join(element.value for element in app.markdown)
    st.cache_resource.clear()
