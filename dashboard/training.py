"""Training as a background job of the shared job manager, and the live view of it.

The job outlives the browser tab: progress goes to the job's progress dict and, through the
Trainer, to the run folder (status.json, history.csv, preview.npz), which is what the live panel
reads. Runs started elsewhere (the command line on the same server) therefore show up too.

The job queue lives in memory, so each queued training is also written to a request file,
``<project>/queue/<request id>.json`` (this module alone names the folder and its format; see
:class:`QueuedRequest`). The file goes once the job has made its run folder (which takes over), when the job
ends without one, or when it is cancelled; after a server restart the files left over are the trainings that
never started, listed by :func:`lost_requests` to be queued again or discarded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st

from impartial.config import RunConfig
from impartial.device import lower_thread_priority, pick_device, slot_device
from impartial.devicelock import device_turn
from impartial.errors import InputError
from impartial.jobs import FINAL_STATES, JobContext, JobInfo, JobRecords, record_id
from impartial.learning import score_on_labelled_images
from impartial.live import ProjectLiveData
from impartial.project import Project, RunInfo, open_project
from impartial.results import prepare_results
from impartial.runs import CONFIG_FILE, Run, has_checkpoint, read_history, read_preview, read_status, set_focus
from impartial.scribbles import missing_sides
from impartial.train import Trainer, TrainingEvent, step_pace

from .images import project_composite
from .render import blend, colormap, colour_bar, loss_figure
from .state import data_root, job_manager, job_owner, user

log = logging.getLogger(__name__)

REFRESH_SECONDS = 2.0
LOSS_COLUMNS = ["scribble", "rec", "reg", "val", "total"]
RESUMABLE = ("stopped", "interrupted", "failed")
QUEUE_FOLDER = "queue"  # <project>/queue/<request id>.json: a queued training that has not started
# Held from the last "is a training of this project going?" check to the job's submission, so two sessions
# pressing Start at once cannot both pass the check (the job manager lives in this process).
_SUBMITTING = threading.Lock()


@dataclass(frozen=True)
class QueuedRequest:
    """A queued training as its request file holds it: enough to queue it again after a restart."""

    id: str  # the file's stem: <manager instance>-<job id>, unique across restarts
    project: str
    owner: str
    label: str
    created: float
    config: dict[str, Any]  # RunConfig.to_dict()
    preview_name: str | None
    init_from: str | None  # fine-tune from this checkpoint
    run_dir: str | None  # resume this run
    manager: str  # JobManager.instance that accepted the job
    job: str  # its job id in that manager


def _requests(project_dir: Path) -> JobRecords[QueuedRequest]:
    return JobRecords(project_dir / QUEUE_FOLDER, QueuedRequest)


PREVIEW_OPACITY = 0.7  # the probability's colours over the image in the training preview
LIVE_LABEL = "live"  # the label of live-mode jobs (see impartial.live)


def submit_training(project: Project, config: RunConfig, preview_name: str | None,
                    init_from: Path | None = None, run_dir: Path | None = None, live: bool = False) -> str:
    """Queue a training of ``project``; returns the job id. With ``live`` it is a live run (see
    :mod:`impartial.live`) previewing ``preview_name`` until the Scribble page names another image.

    Raises InputError, before anything is queued, while a training of the project is queued or running
    (see :func:`training_in_progress`), when the project has no scribbles, and when a task's strokes lack
    a side (only cells or only background: see :func:`impartial.scribbles.missing_sides`), which the
    network cannot learn from. ``run_dir`` given = resume that run (its saved config wins).
    """
    _refuse_while_training(project)  # before reading the images: the answer is quick
    dataset = project.training_set(config)
    one_sided = missing_sides([item.scribbles for item in dataset], config)
    if one_sided:
        several = len(config.tasks) > 1
        raise InputError("cannot train yet: " + " ".join(gap.message(several) for gap in one_sided))
    preview = project.normalized(preview_name) if preview_name else None
    label = LIVE_LABEL if live else f"resume {run_dir.name}" if run_dir else ("fine-tune" if init_from else "train")
    owner = job_owner()  # read here: the work runs in a thread without this session's state
    manager = job_manager()

    def work(ctx: JobContext, request_id: str) -> Run | None:
        device = slot_device(config.train.device, ctx.slot)
        if device.type == "cpu":
            lower_thread_priority()  # the pages of every session come first
        # a command-line run on the same server may hold the device: wait for it, stoppable
        # the lock's description is shown to whoever waits: no project or user name in it
        with device_turn(project.data_root, device, "a dashboard training",
                         on_wait=lambda holder: ctx.report(kind="waiting", message=f"Waiting for {holder}."),
                         stop_event=ctx.stop_event) as granted:
            if not granted:
                return None
            folder = run_dir or project.new_run_dir()  # made when the job starts: a queued job leaves no folder
            _requests(project.dir).remove(request_id)  # the run folder takes over
            # the totals come with the trainer's start event (a time budget's are estimated once it runs)
            ctx.report(run_dir=str(folder), kind="start", epoch=0)
            if live and preview_name:
                set_focus(folder, preview_name)
            trainer = Trainer(config, dataset, folder, on_event=lambda event: ctx.report(**_progress(event)),
                              init_from=init_from, preview_image=preview, preview_name=preview_name or "",
                              stop_event=ctx.stop_event,
                              device=device, annotation_minutes=project.annotation_minutes(),
                              live=ProjectLiveData(project, config, folder) if live else None)
            run = trainer.run()
            if run.checkpoints:
                # while the run holds the device: the Results page's first visitor then waits for no prediction
                ctx.report(kind="predicting", message="Predicting the image the Results page opens on.")
                prepare_results(run, project)
                # the learning curve's scores on labelled images the run did not see
                ctx.report(kind="scoring", message="Scoring on labelled images it did not train on.")
                score_on_labelled_images(run, project)
            return run

    def request(request_id: str, job_id: str) -> QueuedRequest:
        return QueuedRequest(
            id=request_id, project=project.name, owner=owner, label=label, created=time.time(),
            config=config.to_dict(), preview_name=preview_name, init_from=None if init_from is None else str(init_from),
            run_dir=None if run_dir is None else str(run_dir), manager=manager.instance, job=job_id)

    with _SUBMITTING:
        _refuse_while_training(project)  # again: another session may have started one while the images loaded
        return _requests(project.dir).submit(manager, owner, project.name, f"{label} · {project.name}", work, request)


def live_job(project: Project) -> JobInfo | None:
    """The project's live-mode job when one is queued or running."""
    job = active_job(project)
    return job if job is not None and job.label.startswith(f"{LIVE_LABEL} ·") else None


def training_in_progress(project: Project) -> str | None:
    """Why a new training of ``project`` cannot start now, in one line; None when it can.

    A training is in progress while a job of the project is queued or running in this server, or while
    one of its run folders says running (a command-line run, ``impartial train --project``).
    """
    job = active_job(project)
    if job is not None and job.label.startswith(f"{LIVE_LABEL} ·"):
        return (f"Live mode is training {project.name}: turn it off on the Scribble page (or press Stop) before "
                "starting another training.")
    if job is not None:
        state = "waiting in the queue" if job.state == "queued" else "running"
        return f"A training of {project.name} is {state}: stop it or wait for it to end before starting another."
    running = next((info for info in project.runs() if info.status.get("state") == "running"), None)
    if running is not None:
        return (f"Run {running.id} of {project.name} is training (started outside this page): wait for it to "
                "end before starting another.")
    return None


def _refuse_while_training(project: Project) -> None:
    reason = training_in_progress(project)
    if reason is not None:
        raise InputError(reason)


def lost_requests(projects: list[Any]) -> list[QueuedRequest]:
    """Trainings queued before the server restarted and never started, in ``projects`` (objects with ``.dir``:
    the viewer's visible projects, so nobody sees requests of projects they may not open), oldest first.

    Request files of this server's jobs that ended without removing theirs are removed here.
    """
    lost = [request for project in projects for request in _requests(Path(project.dir)).lost(job_manager())]
    return sorted(lost, key=lambda request: request.created)


def queue_again(request: QueuedRequest) -> str:
    """Queue a lost request with its saved settings (the project's scribbles as they are now); returns the job id.

    Raises InputError (no scribbles any more, a run to resume or start from is gone) and PermissionError.
    """
    project = open_project(data_root(), request.project, user=user())
    for path in (request.init_from, request.run_dir):
        if path is not None and not Path(path).exists():
            raise InputError(f"{Path(path).name} no longer exists", path)
    job_id = submit_training(project, RunConfig.from_dict(request.config), request.preview_name,
                             init_from=None if request.init_from is None else Path(request.init_from),
                             run_dir=None if request.run_dir is None else Path(request.run_dir))
    _requests(project.dir).remove(request.id)
    return job_id


def discard_request(request: QueuedRequest) -> None:
    """Forget a lost request (PermissionError when the viewer may not open its project)."""
    _requests(open_project(data_root(), request.project, user=user()).dir).remove(request.id)


def request_line(request: QueuedRequest) -> str:
    """One line of the list of lost requests."""
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(request.created))
    return (f"**{request.label} · {request.project}** — not started (the server restarted), "
            f"queued {when} by {request.owner}")


def _progress(event: TrainingEvent) -> dict[str, Any]:
    """The job-progress fields of a trainer event (plain values only: the UI thread reads them)."""
    return {"kind": event.kind, "epoch": event.epoch, "total_epochs": event.total_epochs, "cycle": event.cycle,
            "elapsed_s": event.elapsed_s, "remaining_s": event.remaining_s, "budget_s": event.budget_s,
            "message": event.message, "losses": dict(event.losses)}


def project_jobs(project: Project) -> list[JobInfo]:
    """This project's jobs, newest first."""
    return job_manager().jobs(project=project.name)


def active_job(project: Project) -> JobInfo | None:
    """The project's running job, else its newest queued one; None when neither.

    The running one comes first, so its progress and Stop button stay in view should a second job of the
    project ever be queued (:func:`submit_training` refuses to queue one).
    """
    jobs = [job for job in project_jobs(project) if job.state not in FINAL_STATES]
    return next((job for job in jobs if job.state == "running"), jobs[0] if jobs else None)


def stop_job(job: JobInfo) -> None:
    """Cancel a queued job or ask a running one to stop (it keeps its checkpoint and can be resumed)."""
    manager = job_manager()
    try:
        manager.cancel(job.id, user())
    except PermissionError as error:
        st.error(str(error))
        return
    if manager.job(job.id).state in FINAL_STATES:  # a queued job: its work never runs to remove its request
        try:
            project = open_project(data_root(), job.project, user=user())
        except (InputError, PermissionError):
            return  # the project is gone: so is its queue
        _requests(project.dir).remove(record_id(manager, job.id))


def job_line(job: JobInfo, visible_projects: set[str]) -> str:
    """One line of the device queue. A job of a project the viewer cannot open shows only its state and place."""
    if job.state == "queued":
        where = f"queue position {job.queue_position}"
    elif job.progress.get("kind") == "waiting":
        where = job.progress["message"]
    else:
        where = f"epoch {epoch_count(job.progress)}, {time_left(job.progress, 'running')}"
    if job.project not in visible_projects:
        return f"**another user's training** — {job.state}, {where}"
    return f"**{job.label}** — {job.state}, {where} (by {job.owner})"


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def time_left(progress: dict[str, Any], state: str, now: float | None = None) -> str:
    """The "remaining" part of a live run's caption.

    ``progress`` is a status.json merged with the job's progress (``updated``: the status's heartbeat, written
    with the last epoch's figures). With a time budget the run ends at the budget: what is left of it, counted
    down from the heartbeat. Without one, "estimating" until the first epoch is timed, then the trainer's
    estimate from the pace so far (the time per epoch times the epochs left), counted down the same way.
    """
    if state != "running":
        return "remaining: estimating (the run is starting)"
    since = max((time.time() if now is None else now) - float(progress["updated"]), 0.0) \
        if progress.get("updated") else 0.0
    budget = progress.get("budget_s")
    if budget:
        left = max(float(budget) - float(progress.get("elapsed_s") or 0.0) - since, 0.0)
        return f"remaining about {format_seconds(left)} (the run ends at its time budget)"
    if not progress.get("epoch") or progress.get("remaining_s") is None:
        return "remaining: estimating (known once the first epoch is timed)"
    return f"remaining about {format_seconds(max(float(progress['remaining_s']) - since, 0.0))}"


@dataclass(frozen=True)
class Pace:
    """How fast this server trains a network: patches per second of training time, from an earlier run's history
    (validation and previews included, setup and the final threshold choice not), or timed on this device when no
    run has been (``run_id`` None: training steps only, so the estimate is a little short)."""

    patches_per_s: float
    run_id: str | None  # the run it was measured in

    @property
    def source(self) -> str:
        return f"the pace of run {self.run_id} here" if self.run_id else "timed on this device just now"


@st.cache_resource(max_entries=16, show_spinner="Timing a few training steps on this device ...")
def _device_pace(speed_key: tuple, _config: RunConfig) -> Pace:  # the key says all that matters of the config
    return Pace(step_pace(_config, pick_device(_config.train.device)), None)


def device_pace(config: RunConfig) -> Pace:
    """The pace of a few training steps of ``config`` on this device, timed once per network and setting per server
    (see :func:`impartial.train.step_pace`)."""
    return _device_pace(_speed_key(config), config)


def patches_per_epoch(config: RunConfig) -> int:
    """The patches one epoch trains on: whole batches, at least one (as the trainer counts them)."""
    return max(1, config.train.patches_per_epoch // config.train.batch) * config.train.batch


def _speed_key(config: RunConfig) -> tuple:
    """What sets the time a training step takes: the network and its inputs and outputs, patch, batch,
    precision and device."""
    train = config.train
    return (config.n_channels, config.n_outputs, dataclasses.astuple(config.model), train.patch, train.batch,
            train.precision, train.device)


def measured_pace(runs: list[RunInfo], config: RunConfig) -> Pace | None:
    """The pace of the newest of ``runs`` (newest first) that trained the same network the same way as
    ``config`` would (see :func:`_speed_key`), from its history: epochs trained x patches per epoch / the
    training time of its last epoch. None when no run matches or none has finished an epoch."""
    key = _speed_key(config)
    for info in runs:
        if not (info.dir / CONFIG_FILE).exists():
            continue  # queued or just created
        try:
            earlier = RunConfig.load(info.dir / CONFIG_FILE)
            if _speed_key(earlier) != key:
                continue
            history = read_history(info.dir)
            seconds = float(history["elapsed_s"].iloc[-1]) if len(history) else 0.0
        except (InputError, KeyError, TypeError, ValueError):
            continue  # damaged: another run may tell
        if seconds > 0:
            return Pace(len(history) * patches_per_epoch(earlier) / seconds, info.id)
    return None


def estimated_seconds(config: RunConfig, pace: Pace | None) -> float | None:
    """The training time of a run with ``config``: its time budget, else its epochs at ``pace`` (early stopping
    may end it sooner); None without a budget or a pace."""
    if config.train.max_minutes:
        return config.train.max_minutes * 60.0
    if pace is None:
        return None
    return config.train.epochs * patches_per_epoch(config) / pace.patches_per_s


def estimate_line(config: RunConfig, pace: Pace | None) -> str:
    """One line for the Train form: how long a run with ``config`` will train on this server, and from what."""
    seconds = estimated_seconds(config, pace)
    rate = "" if pace is None else f"{_rate(pace.patches_per_s)} patches/s, {pace.source}"
    if config.train.max_minutes:
        epochs = "" if pace is None else \
            f": about {int(seconds * pace.patches_per_s // patches_per_epoch(config))} epochs at {rate}"
        return f"Trains for its {format_seconds(seconds)} time budget{epochs}."
    if seconds is None:
        return ("No estimate yet: no earlier run of this network here to measure the pace. The time left shows "
                "once the first epoch is timed.")
    return (f"About {format_seconds(seconds)} of training: {config.train.epochs} epochs x "
            f"{patches_per_epoch(config)} patches at {rate} (early stopping may end it sooner).")


def _rate(patches_per_s: float) -> str:
    return f"{patches_per_s:.0f}" if patches_per_s >= 10 else f"{patches_per_s:.1f}"


def epoch_count(progress: dict[str, Any]) -> str:
    """'12 / 40' from a status.json or job-progress dict.

    With a time budget the total is the trainer's estimate from its pace ('12 / about 40'), unknown ('?')
    until the first epoch is timed; once the budget is spent it is the epochs trained.
    """
    epoch, total = int(progress.get("epoch") or 0), int(progress.get("total_epochs") or 0)
    if not total:
        return f"{epoch} / ?"
    about = "about " if progress.get("budget_s") and total > epoch else ""
    return f"{epoch} / {about}{total}"


def progress_fraction(progress: dict[str, Any]) -> float:
    """How far a run is, in [0, 1]: the share of its time budget spent, else of its epochs done."""
    budget = progress.get("budget_s")
    if budget:
        return min(float(progress.get("elapsed_s") or 0.0) / budget, 1.0)
    total = int(progress.get("total_epochs") or 0)
    return min(int(progress.get("epoch") or 0) / total, 1.0) if total else 0.0


def live_panel(project: Project, below: Callable[[], None] | None = None) -> None:
    """Progress of the project's training, refreshed every few seconds while a job is queued or running
    (also a run started from the command line); ``below`` draws what else refreshes with it (the runs table), so
    one timer reads the project's runs, not one per live view."""
    job = active_job(project)
    runs = project.runs()
    outside = runs[0].id if job is None and runs and runs[0].status.get("state") == "running" else None

    def refreshed(job_id: str | None, outside_run: str | None) -> None:
        _panel(project, job_id, outside_run)
        if below is not None:
            below()

    st.fragment(run_every=refresh_seconds(project), key="live-panel")(refreshed)(
        None if job is None else job.id, outside)


def refresh_seconds(project: Project) -> float | None:
    """How often live views refresh: every few seconds while a training of the project is queued or running
    (a command-line one included), else never."""
    runs = project.runs()
    watching = active_job(project) is not None or (bool(runs) and runs[0].status.get("state") == "running")
    return REFRESH_SECONDS if watching else None


def _panel(project: Project, job_id: str | None, outside_run: str | None = None) -> None:
    """The live part; ``outside_run``: a run of the project training outside this server's jobs (the
    command line), whose end redraws the whole page like a job's (Start comes back)."""
    if job_id is None:
        if outside_run is not None and not any(info.id == outside_run and info.status.get("state") == "running"
                                               for info in project.runs()):
            st.rerun()
        _last_outcome(project)
        return
    job = job_manager().job(job_id)
    if job.state in FINAL_STATES:
        st.rerun()  # the job ended: redraw the whole page (run list, buttons)
    if job.state == "queued":
        st.info(f"Waiting in the queue: position {job.queue_position}. It starts when the device is free.",
                icon=":material/hourglass_top:")
        st.button("Cancel", key=f"cancel-{job.id}", on_click=stop_job, args=(job,))
        return
    run_dir = job.progress.get("run_dir")
    if run_dir:
        run_view(project, Path(run_dir), job.progress)
    elif job.progress.get("kind") == "waiting":
        st.info(job.progress["message"], icon=":material/hourglass_top:")
    if job.cancel_requested:
        st.caption("Stopping after the current batch ...")
    else:
        st.button("Stop", key=f"stop-{job.id}", on_click=stop_job, args=(job,), icon=":material/stop:")


def _last_outcome(project: Project) -> None:
    """After the job: its error, or the newest run's state."""
    jobs = project_jobs(project)
    if jobs and jobs[0].state == "failed":
        st.error(f"Training failed: {jobs[0].error}", icon=":material/error:")
    runs = project.runs()
    if runs:
        run_view(project, runs[0].dir)


def run_view(project: Project, run_dir: Path, progress: dict[str, Any] | None = None) -> None:
    """Progress bar, times, loss curves and the latest preview of one run folder."""
    status = read_status(run_dir)
    latest = {**status, **(progress or {})}  # the job's own report is fresher than the file
    state = status.get("state", "new")
    st.markdown(f"**Run `{run_dir.name}`** — {state}")
    st.progress(progress_fraction(latest), text=f"Epoch {epoch_count(latest)}")
    budget = f" of the {format_seconds(latest['budget_s'])} budget" if latest.get("budget_s") else ""
    left = f" · {time_left(latest, state)}" if progress is not None or state == "running" else ""
    st.caption(f"Elapsed {format_seconds(latest.get('elapsed_s'))}{budget}{left}"
               + (f" · {status['message']}" if status.get("message") else ""))
    history = read_history(run_dir)
    curves, preview = st.columns([3, 2])
    with curves:
        if len(history):
            st.plotly_chart(loss_figure(history, LOSS_COLUMNS), width="stretch")
        else:
            st.caption("Loss curves appear after the first epoch.")
    with preview:
        show_preview(project, run_dir)


def show_preview(project: Project, run_dir: Path) -> None:
    """The trainer's latest preview: the probability of each class in a colour map over the image (when the
    preview names a project image of its size), with the colour bar."""
    preview = read_preview(run_dir)
    if preview is None:  # none yet, or being replaced right now: the next refresh shows it
        st.caption("The preview appears after the first epoch.")
        return
    under = None
    if preview.image in project.images() and project.image_shape(preview.image) == preview.probabilities.shape[1:]:
        with contextlib.suppress(InputError):
            under = project_composite(project, preview.image)
    for name, probability in zip(preview.class_names, preview.probabilities, strict=True):
        shown = colormap(probability) if under is None else blend(under, colormap(probability), PREVIEW_OPACITY)
        st.image(shown, caption=f"Preview after epoch {preview.epoch}: probability of {name}"
                                + (f" over {preview.image}" if under is not None else ""), width="stretch")
    st.image(colour_bar(), width="stretch")
    st.caption("Colour bar: probability 0 (left) to 1 (right).")


def run_label(info: RunInfo) -> str:
    """One line naming a run and its state, for select boxes."""
    status = info.status
    epochs = f", epoch {epoch_count(status)}" if "epoch" in status else ""
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(status["updated"])) if "updated" in status else ""
    return f"{info.id} ({status.get('state', 'new')}{epochs}) {when}".strip()


def runs_with_checkpoints(project: Project) -> list[RunInfo]:
    """Runs that can predict: at least one checkpoint saved."""
    return [info for info in project.runs() if has_checkpoint(info.dir)]
