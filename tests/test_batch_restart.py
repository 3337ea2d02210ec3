"""Slide batches survive a server restart as record files: listed to whoever started them, started again with the
same slides and settings, or discarded; a batch that ends leaves no record."""

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from dashboard import batch
from dashboard.batch import BatchSettings, discard_batch, interrupted_batches, start_again, submit_batch
from factories import tiny_project_run
from impartial.demo import create_demo_project
from impartial.jobs import JobManager

WAIT_S = 30.0  # generous: only reached when something is broken
SETTINGS = BatchSettings(scheduler="", workers=2, chunk=512, margin=64)


class FakeBatch:
    """Stands in for the batch's work (no Dask): records what it was given; blocks while ``hold`` is cleared;
    raises ``failure`` when one is set."""

    calls: list[tuple[list[str], BatchSettings]] = []
    hold = threading.Event()
    failure: Exception | None = None

    @classmethod
    def run(cls, ctx, run_dir, paths, out_dir, settings):
        cls.calls.append((paths, settings))
        cls.hold.wait(WAIT_S)
        if cls.failure is not None:
            raise cls.failure
        return []


@pytest.fixture(scope="module")
def project_with_run(tmp_path_factory):
    """A data root with a demo project, a tiny finished run and two slides in imports/."""
    root = tmp_path_factory.mktemp("batches")
    project = create_demo_project(root, n_images=2, size=64)
    run_id = tiny_project_run(project, **{"train.epochs": 2})
    slides = [root / "imports" / f"slide{index}.tif" for index in range(2)]
    slides[0].parent.mkdir()
    for path in slides:
        tifffile.imwrite(path, np.ones((2, 32, 32), np.uint16), metadata={"axes": "CYX"})
    return root, project, run_id, slides


@pytest.fixture
def server(monkeypatch, project_with_run):
    """``server()`` starts a batch manager as the dashboard's (a new one = the server restarted); the batch's work
    is FakeBatch; the session's user is ann. Records left by a test are removed after it."""
    managers = []
    monkeypatch.setattr(batch, "_run_batch", FakeBatch.run)
    monkeypatch.setattr(batch, "job_owner", lambda: "ann")
    FakeBatch.calls, FakeBatch.failure = [], None
    FakeBatch.hold.clear()

    def start() -> JobManager:
        manager = JobManager(slots=1)
        managers.append(manager)
        monkeypatch.setattr(batch, "batch_manager", lambda: manager)
        return manager

    yield start
    FakeBatch.hold.set()
    for manager in managers:
        manager.shutdown(wait=True)
    for record in (project_with_run[1].dir / batch.BATCH_FOLDER).glob("*.json"):
        record.unlink()


def records(project) -> list[Path]:
    return sorted((project.dir / batch.BATCH_FOLDER).glob("*.json"))


def wait_for_calls(count: int) -> None:
    deadline = time.monotonic() + WAIT_S
    while len(FakeBatch.calls) < count:
        assert time.monotonic() < deadline, f"{count} batch(es) expected to run, {len(FakeBatch.calls)} ran"
        time.sleep(0.01)


def test_a_batch_running_at_a_restart_is_listed_to_its_owner_and_starts_again_with_its_slides(
        project_with_run, server):
    root, project, run_id, slides = project_with_run
    first = server()
    submit_batch(project, run_id, slides, SETTINGS)
    wait_for_calls(1)
    assert len(records(project)) == 1
    assert interrupted_batches(project, "ann") == []  # running in this server: not interrupted

    first.shutdown(wait=False)  # the server restarts while the batch runs
    second = server()
    (request,) = interrupted_batches(project, "ann")
    assert (request.run_id, request.slides, request.owner) == (run_id, [str(path) for path in slides], "ann")
    assert interrupted_batches(project, "bob") == []  # only whoever started it sees it
    assert len(interrupted_batches(project, None)) == 1  # logins off: everyone is the owner

    job_id = start_again(project, request, root, None)
    wait_for_calls(2)
    assert FakeBatch.calls[-1] == ([str(path) for path in slides], SETTINGS)
    assert [path.stem for path in records(project)] == [f"{second.instance}-{job_id}"]  # the old record went
    FakeBatch.hold.set()
    assert second.wait(job_id, WAIT_S).state == "done"
    assert records(project) == [] and interrupted_batches(project, "ann") == []


@pytest.mark.parametrize("failure", [None, RuntimeError("the scheduler went away")])
def test_a_batch_that_ends_leaves_no_record(project_with_run, server, failure):
    _, project, run_id, slides = project_with_run
    manager = server()
    FakeBatch.failure = failure
    FakeBatch.hold.set()
    job_id = submit_batch(project, run_id, slides[:1], SETTINGS)
    assert manager.wait(job_id, WAIT_S).state == ("done" if failure is None else "failed")
    assert records(project) == []


def test_a_batch_cancelled_in_the_queue_and_a_discarded_one_leave_no_record(project_with_run, server):
    root, project, run_id, slides = project_with_run
    manager = server()
    running = submit_batch(project, run_id, slides[:1], SETTINGS)
    queued = submit_batch(project, run_id, slides[1:], SETTINGS)
    wait_for_calls(1)
    manager.cancel(queued, "ann")  # its work never runs to remove its record: reading the list does
    assert interrupted_batches(project, "ann") == [] and len(records(project)) == 1

    manager.shutdown(wait=False)
    server()
    (request,) = interrupted_batches(project, "ann")
    assert request.job == running
    discard_batch(project, request)
    assert records(project) == [] and interrupted_batches(project, "ann") == []


def test_starting_again_refuses_a_slide_the_viewer_may_no_longer_read(project_with_run, server, tmp_path):
    root, project, run_id, slides = project_with_run
    manager = server()
    submit_batch(project, run_id, slides[:1], SETTINGS)
    wait_for_calls(1)
    manager.shutdown(wait=False)
    server()
    (request,) = interrupted_batches(project, "ann")
    moved = batch.BatchRequest(**{**request.__dict__, "slides": [str(tmp_path / "elsewhere.tif")]})
    with pytest.raises(batch.InputError, match="elsewhere.tif"):
        start_again(project, moved, root, None)
    assert len(records(project)) == 1  # still listed: nothing was started
