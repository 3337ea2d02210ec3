"""Background jobs: a FIFO queue of work run by a few daemon threads.

One :class:`JobManager` is shared by every browser session of the dashboard (it keeps one in
``st.cache_resource``), so a training started in one tab keeps running, and shows its progress,
when the tab is closed or another user opens the page. ``slots`` threads take jobs in order of
submission; with ``slots=1`` (one training per device) a second job waits until the first ends.

Work is a callable taking a :class:`JobContext`: it reports progress with ``ctx.report(...)`` and
polls ``ctx.stop_requested`` (or hands ``ctx.stop_event`` to the Trainer) to stop cleanly.

The queue lives in memory only. Each manager has a random :attr:`JobManager.instance`, so whoever
records a queued job on disk (:class:`JobRecords`: the dashboard's queued trainings and slide batches) can
tell, after a restart, that the manager that accepted it is gone: job ids restart at ``job-1`` in every process.
"""

from __future__ import annotations

import collections
import itertools
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar, get_args

from .errors import InputError
from .storage import write_json

log = logging.getLogger(__name__)

JobState = Literal["queued", "running", "done", "failed", "cancelled"]
QUEUED, RUNNING, DONE, FAILED, CANCELLED = get_args(JobState)
FINAL_STATES = frozenset({DONE, FAILED, CANCELLED})


@dataclass(frozen=True)
class JobInfo:
    """An immutable snapshot of one job, safe to hand to the UI thread."""

    id: str
    owner: str
    project: str
    label: str
    state: JobState
    progress: dict[str, Any]
    error: str | None
    created: float
    started: float | None
    finished: float | None
    queue_position: int | None  # 1 = next to run; None when not queued
    cancel_requested: bool = False  # a running job was asked to stop and has not returned yet

    @property
    def finished_state(self) -> bool:
        """True once the job can change no more (done, failed or cancelled)."""
        return self.state in FINAL_STATES


class JobContext:
    """What a job's work sees: its id, its stop flag and a way to report progress."""

    def __init__(self, job_id: str, stop_event: threading.Event, on_report: Callable[[dict[str, Any]], None],
                 slot: int = 0) -> None:
        self.job_id = job_id
        self.slot = slot  # which worker runs the job: with one slot per GPU, the GPU to use
        self.stop_event = stop_event
        self._on_report = on_report

    @property
    def stop_requested(self) -> bool:
        return self.stop_event.is_set()

    def report(self, **progress: Any) -> None:
        """Merge ``progress`` into the job's progress dict (thread-safe)."""
        self._on_report(progress)


@dataclass
class _Job:
    """The manager's mutable record of a job; only touched while holding the manager's lock."""

    id: str
    owner: str
    project: str
    label: str
    work: Callable[[JobContext], Any]
    created: float
    state: JobState = QUEUED
    progress: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    started: float | None = None
    finished: float | None = None
    result: Any = None
    stop_event: threading.Event = field(default_factory=threading.Event)


class JobManager:
    """Runs submitted work in order on ``slots`` daemon threads; thread-safe."""

    def __init__(self, slots: int = 1) -> None:
        if slots < 1:
            raise ValueError(f"slots must be at least 1, got {slots}")
        self.instance = uuid.uuid4().hex  # tells this manager's job ids from those of an earlier process
        self._jobs: dict[str, _Job] = {}
        self._pending: collections.deque[str] = collections.deque()
        self._changed = threading.Condition()  # guards every field above and wakes workers and waiters
        self._ids = itertools.count(1)
        self._closing = False
        self._workers = [threading.Thread(target=self._work_loop, args=(index,), name=f"impartial-job-{index}",
                                          daemon=True) for index in range(slots)]
        for worker in self._workers:
            worker.start()

    # --- submitting and controlling -------------------------------------------------------

    def submit(self, owner: str, project: str, label: str, work: Callable[[JobContext], Any]) -> str:
        """Queue ``work``; returns the job id. Jobs start in order of submission."""
        with self._changed:
            if self._closing:
                raise RuntimeError("the job manager is shut down")
            job_id = f"job-{next(self._ids)}"
            self._jobs[job_id] = _Job(id=job_id, owner=owner, project=project, label=label, work=work,
                                      created=time.time())
            self._pending.append(job_id)
            self._changed.notify_all()
        return job_id

    def cancel(self, job_id: str, user: str | None) -> None:
        """Cancel a job: a queued one at once, a running one when its work returns after its stop flag is set.

        ``user`` None means access control is off. Raises PermissionError for another user's job,
        KeyError for an unknown id. Cancelling a finished job does nothing.
        """
        with self._changed:
            job = self._get(job_id)
            if user is not None and job.owner != user:
                raise PermissionError(f"job {job_id} belongs to {job.owner}, not {user}")
            if job.state == QUEUED:
                self._pending.remove(job_id)
                self._finish(job, CANCELLED)
            elif job.state == RUNNING:
                job.stop_event.set()

    def shutdown(self, wait: bool = True) -> None:
        """Refuse new jobs, cancel queued ones, ask running ones to stop; join the threads when ``wait``."""
        with self._changed:
            self._closing = True
            while self._pending:
                self._finish(self._jobs[self._pending.popleft()], CANCELLED)
            for job in self._jobs.values():
                if job.state == RUNNING:
                    job.stop_event.set()
            self._changed.notify_all()
        if wait:
            for worker in self._workers:
                worker.join()

    # --- reading --------------------------------------------------------------------------

    def job(self, job_id: str) -> JobInfo:
        """A snapshot of one job; KeyError for an unknown id."""
        with self._changed:
            return self._snapshot(self._get(job_id))

    def jobs(self, owner: str | None = None, project: str | None = None) -> list[JobInfo]:
        """Snapshots of the jobs matching ``owner`` and ``project`` (None = any), newest first."""
        with self._changed:
            chosen = [job for job in self._jobs.values()
                      if owner in (None, job.owner) and project in (None, job.project)]
            return [self._snapshot(job) for job in reversed(chosen)]  # dicts keep submission order

    def holds(self, instance: str, job_id: str) -> bool:
        """True when ``job_id`` of manager ``instance`` is a job of this manager (queued, running or ended)."""
        with self._changed:
            return instance == self.instance and job_id in self._jobs

    def queue_position(self, job_id: str) -> int | None:
        """1 for the next job to start, 2 for the one after, ...; None when the job is not queued."""
        with self._changed:
            self._get(job_id)
            return self._position(job_id)

    def result(self, job_id: str) -> Any:
        """The value the job's work returned (None until it is done, or when it failed or was cancelled)."""
        with self._changed:
            return self._get(job_id).result

    def wait(self, job_id: str, timeout: float | None = None) -> JobInfo:
        """Block until the job is finished or ``timeout`` seconds pass; returns its snapshot either way."""
        with self._changed:
            job = self._get(job_id)
            self._changed.wait_for(lambda: job.state in FINAL_STATES, timeout)
            return self._snapshot(job)

    # --- internals ------------------------------------------------------------------------

    def _get(self, job_id: str) -> _Job:
        if job_id not in self._jobs:
            raise KeyError(f"unknown job {job_id}")
        return self._jobs[job_id]

    def _position(self, job_id: str) -> int | None:
        return self._pending.index(job_id) + 1 if job_id in self._pending else None

    def _snapshot(self, job: _Job) -> JobInfo:
        return JobInfo(id=job.id, owner=job.owner, project=job.project, label=job.label, state=job.state,
                       progress=dict(job.progress), error=job.error, created=job.created, started=job.started,
                       finished=job.finished, queue_position=self._position(job.id),
                       cancel_requested=job.state == RUNNING and job.stop_event.is_set())

    def _finish(self, job: _Job, state: JobState, error: str | None = None, result: Any = None) -> None:
        """Record the end of a job (caller holds the lock) and wake everyone waiting."""
        job.state, job.error, job.result, job.finished = state, error, result, time.time()
        self._changed.notify_all()

    def _next_job(self) -> _Job | None:
        """Take the oldest queued job, blocking while none; None once the manager shuts down."""
        with self._changed:
            self._changed.wait_for(lambda: self._pending or self._closing)
            if not self._pending:
                return None
            job = self._jobs[self._pending.popleft()]
            job.state, job.started = RUNNING, time.time()
            self._changed.notify_all()
            return job

    def _work_loop(self, slot: int) -> None:
        while (job := self._next_job()) is not None:
            self._run(job, slot)

    def _run(self, job: _Job, slot: int) -> None:
        context = JobContext(job.id, job.stop_event, lambda progress: self._merge_progress(job, progress), slot)
        state, error_message, result = DONE, None, None
        try:
            result = job.work(context)
        except InputError as error:
            state, error_message = FAILED, str(error)
        except Exception as error:  # a job must never kill its worker thread; the message reaches the UI
            log.exception("job %s (%s) failed", job.id, job.label)
            state, error_message = FAILED, f"{type(error).__name__}: {error}"
        if state == DONE and job.stop_event.is_set():
            state = CANCELLED
        with self._changed:
            self._finish(job, state, error_message, result)

    def _merge_progress(self, job: _Job, progress: dict[str, Any]) -> None:
        with self._changed:
            job.progress.update(progress)
            self._changed.notify_all()


Record = TypeVar("Record")


class JobRecords(Generic[Record]):
    """Jobs written down as JSON files in ``folder``, one per job, so that a server restart, which empties the
    queue, leaves a list of what it interrupted.

    A record is a dataclass of type ``kind`` with at least ``id`` (the file's stem, see :func:`record_id`),
    ``manager`` (the :attr:`JobManager.instance` that accepted the job), ``job`` (its id there) and ``created``
    (seconds since the epoch). :meth:`submit` queues a job with its record and removes the record when the job's
    work ends; :meth:`lost` removes those of jobs that ended without running (cancelled while queued).
    """

    def __init__(self, folder: Path, kind: type[Record]) -> None:
        self.folder = folder
        self.kind = kind

    def submit(self, manager: JobManager, owner: str, project: str, label: str,
               work: Callable[[JobContext, str], Any], record: Callable[[str, str], Record]) -> str:
        """Queue ``work`` on ``manager`` (see :meth:`JobManager.submit`) and write its record,
        ``record(record id, job id)``; returns the job id.

        The work starts only once its record is written, and gets the record's id besides its context (to remove
        it earlier, when another file takes over); the record is removed when the work returns or raises. A record
        that cannot be written is logged: the job runs all the same, and only a restart would lose it.
        """
        recorded = threading.Event()  # the record is written: the work may remove it
        name: list[str] = []  # the record's id, known once the manager has named the job

        def recorded_work(ctx: JobContext) -> Any:
            recorded.wait()
            try:
                return work(ctx, name[0])
            finally:
                self.remove(name[0])

        job_id = manager.submit(owner, project, label, recorded_work)
        name.append(record_id(manager, job_id))
        try:
            self.write(record(name[0], job_id))
        except OSError as error:
            log.warning("could not record job %s in %s: %s", job_id, self.folder, error)
        finally:
            recorded.set()
        return job_id

    def write(self, record: Record) -> None:
        write_json(self._path(record.id), asdict(record))

    def remove(self, record_id: str) -> None:
        self._path(record_id).unlink(missing_ok=True)

    def read(self) -> list[Record]:
        """Every record, oldest first; unreadable files (half-written, foreign) are skipped."""
        records = []
        for path in self.folder.glob("*.json") if self.folder.is_dir() else []:
            if path.name.startswith("."):
                continue  # an atomic write in progress
            try:
                record = self.kind(**json.loads(path.read_text()))
            except (OSError, ValueError, TypeError):
                continue
            if record.id == path.stem:
                records.append(record)
        return sorted(records, key=lambda record: record.created)

    def lost(self, manager: JobManager) -> list[Record]:
        """The records of jobs that ``manager`` does not hold: accepted by a manager gone with an earlier server
        process. Records of ``manager``'s jobs that have ended are removed."""
        lost = []
        for record in self.read():
            if not manager.holds(record.manager, record.job):
                lost.append(record)
            elif manager.job(record.job).finished_state:
                self.remove(record.id)
        return lost

    def _path(self, record_id: str) -> Path:
        return self.folder / f"{record_id}.json"


def record_id(manager: JobManager, job_id: str) -> str:
    """A job's name across restarts, for its record file: ``<manager instance>-<job id>``."""
    return f"{manager.instance}-{job_id}"


__all__ = ["FINAL_STATES", "JobContext", "JobInfo", "JobManager", "JobRecords", "record_id"]
