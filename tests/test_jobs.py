"""JobManager: FIFO order, queue positions, cancelling, failures, ownership; JobRecords across restarts."""

import threading
from dataclasses import dataclass

import pytest

from impartial.errors import InputError
from impartial.jobs import JobContext, JobManager, JobRecords, record_id

WAIT_S = 10.0  # generous: only reached when something is broken


@pytest.fixture
def manager():
    jobs = JobManager(slots=1)
    yield jobs
    jobs.shutdown(wait=True)


def blocking_work(started: threading.Event, release: threading.Event, value=None):
    """Work that signals it started, then blocks until released (or stopped)."""

    def work(ctx: JobContext):
        started.set()
        while not release.wait(0.01):
            if ctx.stop_requested:
                return "stopped early"
        return value

    return work


def test_second_job_waits_for_the_first_and_results_are_kept(manager):
    first_started, release_first = threading.Event(), threading.Event()
    second_started = threading.Event()
    first = manager.submit("ann", "p", "train 1", blocking_work(first_started, release_first, value=1))
    second = manager.submit("ann", "p", "train 2", blocking_work(second_started, threading.Event(), value=2))
    assert first_started.wait(WAIT_S)

    assert manager.job(first).state == "running"
    assert manager.job(second).state == "queued"
    assert manager.queue_position(second) == 1
    assert manager.job(second).queue_position == 1
    assert manager.queue_position(first) is None
    assert not second_started.is_set()

    release_first.set()
    assert manager.wait(first, WAIT_S).state == "done"
    assert manager.result(first) == 1
    assert second_started.wait(WAIT_S)
    manager.cancel(second, "ann")
    info = manager.wait(second, WAIT_S)
    assert info.state == "cancelled"
    assert manager.result(second) == "stopped early"  # a stopped work's return value is still kept
    assert info.started is not None and info.finished >= info.started >= info.created


def test_queue_positions_count_from_the_next_job(manager):
    started, release = threading.Event(), threading.Event()
    manager.submit("ann", "p", "running", blocking_work(started, release))
    queued = [manager.submit("ann", "p", f"q{i}", lambda ctx: None) for i in range(3)]
    assert started.wait(WAIT_S)
    assert [manager.queue_position(job_id) for job_id in queued] == [1, 2, 3]

    manager.cancel(queued[0], "ann")
    assert manager.job(queued[0]).state == "cancelled"  # at once, it never ran
    assert manager.job(queued[0]).started is None
    assert [manager.queue_position(job_id) for job_id in queued[1:]] == [1, 2]
    release.set()
    assert [manager.wait(job_id, WAIT_S).state for job_id in queued[1:]] == ["done", "done"]


def test_cancel_running_sets_the_stop_event_and_ends_cancelled(manager):
    started = threading.Event()
    seen_stop = threading.Event()

    def work(ctx: JobContext):
        started.set()
        assert ctx.stop_event.wait(WAIT_S)
        seen_stop.set()

    job_id = manager.submit("ann", "p", "train", work)
    assert started.wait(WAIT_S)
    manager.cancel(job_id, "ann")
    info = manager.wait(job_id, WAIT_S)
    assert seen_stop.is_set()
    assert info.state == "cancelled" and info.error is None


def test_other_users_cannot_cancel(manager):
    started, release = threading.Event(), threading.Event()
    job_id = manager.submit("ann", "p", "train", blocking_work(started, release))
    with pytest.raises(PermissionError):
        manager.cancel(job_id, "bob")
    assert started.wait(WAIT_S)
    assert manager.job(job_id).state == "running"
    manager.cancel(job_id, None)  # access control off: anyone may cancel
    assert manager.wait(job_id, WAIT_S).state == "cancelled"


def test_failures_keep_the_message(manager):
    def bad_input(ctx):
        raise InputError("no scribbles in project demo")

    def crash(ctx):
        raise RuntimeError("out of memory")

    bad, crashed = manager.submit("ann", "p", "a", bad_input), manager.submit("ann", "p", "b", crash)
    assert manager.wait(bad, WAIT_S).error == "no scribbles in project demo"
    info = manager.wait(crashed, WAIT_S)
    assert info.state == "failed" and info.error == "RuntimeError: out of memory"
    after = manager.submit("ann", "p", "c", lambda ctx: "fine")  # the worker survived both
    assert manager.wait(after, WAIT_S).state == "done" and manager.result(after) == "fine"


def test_progress_reports_merge_and_snapshots_do_not_change(manager):
    started, release = threading.Event(), threading.Event()

    def work(ctx: JobContext):
        ctx.report(epoch=1, total_epochs=3)
        ctx.report(epoch=2, loss=0.5)
        started.set()
        release.wait(WAIT_S)

    job_id = manager.submit("ann", "p", "train", work)
    assert started.wait(WAIT_S)
    snapshot = manager.job(job_id)
    assert snapshot.progress == {"epoch": 2, "total_epochs": 3, "loss": 0.5}
    snapshot.progress["epoch"] = 99  # a copy: the manager's record is untouched
    assert manager.job(job_id).progress["epoch"] == 2
    release.set()
    assert manager.wait(job_id, WAIT_S).state == "done"


def test_listing_filters_and_orders_newest_first(manager):
    ids = [manager.submit(owner, project, "x", lambda ctx: None)
           for owner, project in [("ann", "p"), ("bob", "p"), ("ann", "q")]]
    for job_id in ids:
        manager.wait(job_id, WAIT_S)
    assert [job.id for job in manager.jobs()] == ids[::-1]
    assert [job.id for job in manager.jobs(owner="ann")] == [ids[2], ids[0]]
    assert [job.id for job in manager.jobs(project="p")] == [ids[1], ids[0]]
    assert [job.id for job in manager.jobs(owner="ann", project="p")] == [ids[0]]
    with pytest.raises(KeyError):
        manager.job("job-999")


def test_two_slots_run_two_jobs_at_once():
    jobs = JobManager(slots=2)
    both_running = threading.Barrier(2, timeout=WAIT_S)  # breaks (and fails the jobs) unless both run together
    try:
        ids = [jobs.submit("ann", "p", str(i), lambda ctx: (both_running.wait(), ctx.slot)[1]) for i in range(2)]
        assert [jobs.wait(job_id, WAIT_S).state for job_id in ids] == ["done", "done"]
        assert sorted(jobs.result(job_id) for job_id in ids) == [0, 1]  # each worker's slot: its GPU
    finally:
        jobs.shutdown()


def test_shutdown_cancels_queued_and_stops_running():
    jobs = JobManager(slots=1)
    started = threading.Event()
    running = jobs.submit("ann", "p", "a", blocking_work(started, threading.Event()))
    queued = jobs.submit("ann", "p", "b", lambda ctx: None)
    assert started.wait(WAIT_S)
    jobs.shutdown(wait=True)
    assert jobs.job(running).state == "cancelled"
    assert jobs.job(queued).state == "cancelled"
    with pytest.raises(RuntimeError):
        jobs.submit("ann", "p", "c", lambda ctx: None)


def test_a_manager_holds_only_its_own_jobs(manager):
    job_id = manager.submit("ann", "p", "quick", lambda ctx: None)
    assert manager.holds(manager.instance, job_id)
    assert not manager.holds(manager.instance, "job-999")
    restarted = JobManager(slots=1)  # job ids start again at job-1: the instance tells them apart
    try:
        assert restarted.instance != manager.instance
        assert not restarted.holds(manager.instance, job_id)
    finally:
        restarted.shutdown(wait=True)


@dataclass(frozen=True)
class Note:
    """The smallest record JobRecords keeps."""

    id: str
    manager: str
    job: str
    created: float


def note_of(manager: JobManager, job_id: str, created: float) -> Note:
    return Note(record_id(manager, job_id), manager.instance, job_id, created)


def test_records_of_a_gone_manager_are_lost_oldest_first_and_ended_jobs_records_are_removed(manager, tmp_path):
    records = JobRecords(tmp_path / "notes", Note)
    assert records.read() == [] and records.lost(manager) == []  # no folder yet
    before = JobManager(slots=1)  # the server before a restart
    started, release = threading.Event(), threading.Event()
    running = before.submit("ann", "p", "long", blocking_work(started, release))
    queued = before.submit("ann", "p", "next", lambda ctx: None)
    assert started.wait(WAIT_S)
    records.write(note_of(before, queued, created=2.0))
    records.write(note_of(before, running, created=1.0))
    assert records.lost(before) == []  # its own jobs, still going
    release.set()
    before.wait(queued, WAIT_S)
    kept = note_of(before, running, created=1.0)  # written again, as a record whose job ended unnoticed
    records.write(kept)
    before.shutdown(wait=True)

    assert records.lost(manager) == [kept, note_of(before, queued, created=2.0)]  # the new server holds neither
    assert [path.name for path in sorted((tmp_path / "notes").iterdir())] == sorted(
        f"{note.id}.json" for note in records.read())
    ended = manager.submit("ann", "p", "quick", lambda ctx: None)
    manager.wait(ended, WAIT_S)
    records.write(note_of(manager, ended, created=3.0))
    assert len(records.read()) == 3
    assert len(records.lost(manager)) == 2 and len(records.read()) == 2  # the ended job's record went
    records.remove(kept.id)
    assert records.read() == [note_of(before, queued, created=2.0)]


def test_unreadable_and_misnamed_records_are_skipped(manager, tmp_path):
    records = JobRecords(tmp_path, Note)
    (tmp_path / "garbage.json").write_text("{not json")
    (tmp_path / "foreign.json").write_text('{"id": "foreign", "colour": "red"}')
    (tmp_path / "renamed.json").write_text('{"id": "other", "manager": "m", "job": "job-1", "created": 0}')
    (tmp_path / ".half-written.json").write_text('{"id": ".half-written", "manager": "m", "job": "job-1", '
                                                 '"created": 0}')
    assert records.read() == [] and records.lost(manager) == []
