"""Whole slides from the dashboard: a finished run over a folder or list of slides on the server, as a background
job on the server's Dask cluster (``$IMPARTIAL_DASK_SCHEDULER``) or on a local one, with per-slide progress.

The work is :func:`impartial.slides.predict_slides`; this module checks who may read the slides, runs it in a
job of its own manager (slide batches never wait behind trainings, nor trainings behind them) and draws the
job's progress and the outputs left under the project's folder. Each batch is also written down
(``<project>/batches/``, see :class:`BatchRequest`) until it ends, so a batch that a server restart interrupted is
listed with a button that starts it again from the chunks already written.

Slides may come only from where the Dataset page imports on a shared server
(:func:`impartial.project.check_importable`), logins on or off: the workers of a server's cluster see the data
volume and the folders its administrator mounts, nothing else.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import streamlit as st

from impartial.errors import InputError
from impartial.jobs import FINAL_STATES, JobContext, JobInfo, JobManager, JobRecords
from impartial.project import Project, check_importable, import_roots_from_environment
from impartial.runs import Run
from impartial.slides import (
    SlideProgress,
    SlideResult,
    dask_client,
    find_slides,
    finished_slides,
    output_paths,
    predict_slides,
)

from .state import data_root, job_owner, user, user_errors

SCHEDULER_ENV = "IMPARTIAL_DASK_SCHEDULER"  # tcp://HOST:PORT of the server's Dask scheduler (docs/server.md)
BATCH_SLOTS = 1  # batches run one after the other: a local cluster takes every CPU
REFRESH_SECONDS = 2.0
LABEL_PREFIX = "slides"
BATCH_FOLDER = "batches"  # <project>/batches/<record id>.json: a batch queued or running


@st.cache_resource
def batch_manager() -> JobManager:
    """The server's one queue of slide batches, shared by every session (a batch goes on when its tab closes)."""
    return JobManager(slots=BATCH_SLOTS)


def configured_scheduler() -> str:
    """The server's Dask scheduler address, ``$IMPARTIAL_DASK_SCHEDULER``; empty when none is configured."""
    return os.environ.get(SCHEDULER_ENV, "").strip()


def readable_slides(entries: str, root: Path, viewer: str | None) -> tuple[list[Path], list[InputError]]:
    """The slides that ``entries`` (one path a line: a slide, an OME-Zarr folder or a folder of slides) name and
    ``viewer`` (None: logins are off) may read, in order without repeats, and an error per line that names none
    or may not be read.

    Readable are the viewer's projects, ``<root>/imports`` (``root``: the data root) and
    ``$IMPARTIAL_IMPORT_ROOTS`` (links resolved first), whether logins are on or not: see the module's docstring.
    """
    slides: dict[Path, None] = {}  # a dict keeps the order and drops repeats
    errors = []
    for line in (line.strip() for line in entries.splitlines()):
        if not line:
            continue
        try:
            resolved = check_importable(line, root, viewer, import_roots_from_environment())
            slides.update(dict.fromkeys(find_slides(resolved)))
        except InputError as error:
            errors.append(error)
    if not slides and not errors:
        errors.append(InputError("give at least one slide or folder of slides, one path a line"))
    return list(slides), errors


@dataclasses.dataclass(frozen=True)
class BatchSettings:
    """How a batch runs: on ``scheduler`` (``tcp://HOST:PORT``) or, when empty, a local cluster of ``workers``
    processes; ``chunk`` and ``margin`` as in :func:`impartial.slides.predict_slides`."""

    scheduler: str
    workers: int
    chunk: int
    margin: int

    @property
    def cluster(self) -> str:
        """Where it runs, in words."""
        return f"the Dask scheduler at {self.scheduler}" if self.scheduler else \
            f"a local cluster of {self.workers} worker process(es)"


@dataclasses.dataclass(frozen=True)
class BatchRequest:
    """A batch as its record file holds it, from its submission to its end: enough to start it again after a
    server restart."""

    id: str  # the file's stem: <manager instance>-<job id>
    project: str
    owner: str
    run_id: str
    slides: list[str]
    settings: dict  # BatchSettings as a dict
    created: float
    manager: str  # JobManager.instance that accepted the job
    job: str  # its job id there


def _requests(project: Project) -> JobRecords[BatchRequest]:
    return JobRecords(project.dir / BATCH_FOLDER, BatchRequest)


def submit_batch(project: Project, run_id: str, slides: list[Path], settings: BatchSettings) -> str:
    """Queue the prediction of ``slides`` with run ``run_id`` of ``project``; returns the job id.

    Raises InputError, before anything is queued, when the run has no checkpoint.
    """
    run_dir = project.run_dir(run_id)
    Run.load(run_dir).require_checkpoints()
    out_dir = project.slides_dir(run_id)
    paths = [str(path) for path in slides]
    manager, owner = batch_manager(), job_owner()

    def request(request_id: str, job_id: str) -> BatchRequest:
        return BatchRequest(id=request_id, project=project.name, owner=owner, run_id=run_id, slides=paths,
                            settings=dataclasses.asdict(settings), created=time.time(),
                            manager=manager.instance, job=job_id)

    return _requests(project).submit(
        manager, owner, project.name, f"{LABEL_PREFIX} · {run_id} · {project.name}",
        lambda ctx, _request_id: _run_batch(ctx, run_dir, paths, out_dir, settings), request)


def _run_batch(ctx: JobContext, run_dir: Path, paths: list[str], out_dir: Path,
               settings: BatchSettings) -> list[SlideResult]:
    """The work of a batch job: every slide predicted on the batch's cluster, progress reported to ``ctx``."""
    ctx.report(slides=paths, run=run_dir.name, out_dir=str(out_dir), cluster=settings.cluster, progress={},
               results={})
    progress: dict[str, SlideProgress] = {}
    results: dict[str, SlideResult] = {}

    def on_progress(done: SlideProgress) -> None:
        progress[done.path] = done
        ctx.report(progress=dict(progress))  # a new dict each time: the page reads the last one it got

    def on_result(result: SlideResult) -> None:
        results[result.path] = dataclasses.replace(result)
        ctx.report(results=dict(results))

    with dask_client(settings.scheduler, settings.workers) as (client, threads):
        return predict_slides(client, run_dir, paths, out_dir, chunk=settings.chunk, margin=settings.margin,
                              threads=threads, progress=False, on_result=on_result, on_progress=on_progress,
                              stop_event=ctx.stop_event)


def interrupted_batches(project: Project, viewer: str | None) -> list[BatchRequest]:
    """The batches of ``project`` that a server restart interrupted (queued or running then), oldest first: those
    ``viewer`` started, or all when logins are off (``viewer`` None)."""
    return [request for request in _requests(project).lost(batch_manager()) if viewer in (None, request.owner)]


def start_again(project: Project, request: BatchRequest, root: Path, viewer: str | None) -> str:
    """Submit an interrupted batch again (its slides' chunks already written are kept); returns the job id.

    Raises InputError when its run is gone or a slide can no longer be read by ``viewer``.
    """
    slides, refused = readable_slides("\n".join(request.slides), root, viewer)
    if refused:
        raise refused[0]
    job_id = submit_batch(project, request.run_id, slides, BatchSettings(**request.settings))
    _requests(project).remove(request.id)
    return job_id


def discard_batch(project: Project, request: BatchRequest) -> None:
    """Forget an interrupted batch; its outputs stay where they are."""
    _requests(project).remove(request.id)


def interrupted_section(project: Project) -> None:
    """The viewer's batches of ``project`` that a server restart interrupted, each with Start again / Discard."""
    for request in interrupted_batches(project, user()):
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(request.created))
        st.warning(f"**{LABEL_PREFIX} · {request.run_id}** ({len(request.slides)} slide(s), started {when}) was "
                   "interrupted by a server restart. Starting it again goes on from the chunks already written.",
                   icon=":material/restart_alt:")
        again, discard = st.columns(2)
        again.button("Start again", key=f"batch-again-{request.id}", on_click=_start_again, args=(project, request))
        discard.button("Discard", key=f"batch-discard-{request.id}", on_click=discard_batch, args=(project, request))


def _start_again(project: Project, request: BatchRequest) -> None:
    with user_errors():
        start_again(project, request, data_root(), user())


def project_batches(project: Project) -> list[JobInfo]:
    """The slide batches of ``project`` in this server process, newest first."""
    return batch_manager().jobs(project=project.name)


def stop_batch(job_id: str) -> None:
    """Cancel a queued batch or stop a running one (button callback); another user's batch says it is not theirs."""
    try:
        batch_manager().cancel(job_id, user())
    except PermissionError as error:
        st.error(str(error))


def batch_panel(project: Project) -> None:
    """The project's batches with their slides' progress, refreshed every few seconds while one is queued or
    running; the whole page is drawn again when one ends (its outputs appear)."""
    active = [job.id for job in project_batches(project) if job.state not in FINAL_STATES]
    panel = st.fragment(run_every=REFRESH_SECONDS if active else None, key="batch-panel")(_panel)
    panel(project, active)


def _panel(project: Project, watched: list[str]) -> None:
    jobs = project_batches(project)
    if any(job.id in watched and job.state in FINAL_STATES for job in jobs):
        st.rerun()
    if not jobs:
        st.caption("No batch has run in this project since the server started.")
    for job in jobs:
        _job_view(job)


def _job_view(job: JobInfo) -> None:
    """One batch: its state, where it runs and writes, and each slide's progress, result or error."""
    progress = job.progress
    when = {"queued": f"waiting in the queue (position {job.queue_position})", "running": "running",
            "done": "done", "failed": "failed", "cancelled": "stopped"}[job.state]
    st.markdown(f"**{job.label}** — {when} (by {job.owner})")
    if progress.get("cluster"):
        st.caption(f"On {progress['cluster']}; outputs in `{progress['out_dir']}`")
    if job.error:
        st.error(f"The batch failed: {job.error}", icon=":material/error:")
    for path in progress.get("slides", []):
        _slide_line(path, progress["progress"].get(path), progress["results"].get(path))
    if job.state == "queued":
        st.button("Cancel", key=f"cancel-batch-{job.id}", on_click=stop_batch, args=(job.id,))
    elif job.cancel_requested:
        st.caption("Stopping once the next chunk task ends; chunks being predicted now are still written, and "
                   "starting the same batch again goes on from there.")
    elif job.state == "running":
        st.button("Stop", key=f"stop-batch-{job.id}", on_click=stop_batch, args=(job.id,), icon=":material/stop:")


def _slide_line(path: str, done: SlideProgress | None, result: SlideResult | None) -> None:
    """A slide's progress bar (chunks predicted, labelled, measured), its cell count once done, or its error."""
    name = Path(path).name
    if result is not None and result.error:
        st.error(result.error, icon=":material/error:")
    elif result is not None and result.summary:
        chunks = f"{done.chunks} chunks, " if done is not None else ""  # none: every chunk was done before
        st.progress(1.0, text=f"{name}: done, {chunks}{result.summary['cells']} cells")
    elif done is not None:
        st.progress(done.fraction, text=f"{name}: chunks predicted {done.predicted} / {done.chunks} · labelled "
                                        f"{done.labelled} / {done.chunks} · measured {done.measured} / {done.chunks}")
    else:
        st.progress(0.0, text=f"{name}: waiting (opened and its percentiles estimated when its turn comes)")


# Larger outputs are not offered for download: the server would hold each one whole in memory while it is sent
# (a 16384 x 16384 slide's GeoJSON is 0.9 GB); they are read from the data volume instead.
MAX_DOWNLOAD_BYTES = 200 * 2 ** 20
DOWNLOADS = {"csv": ("Cells (CSV)", "text/csv"), "geojson": ("Cells (GeoJSON, QuPath)", "application/geo+json")}


def outputs_section(project: Project, run_id: str) -> None:
    """Where the slides predicted by run ``run_id`` are, with each one's CSV and GeoJSON to download."""
    folder = project.slides_dir(run_id)
    names = finished_slides(folder)
    if not names:
        st.caption(f"No slide predicted by run {run_id} yet. Outputs go to `{folder}`.")
        return
    st.caption(f"In `{folder}` on the server: per slide `NAME.ome.zarr` (probabilities, variances, entropy and "
               "cell labels, NGFF 0.4: napari, QuPath), `NAME_cells.csv` and `NAME.geojson` (QuPath: File > Import "
               "objects). The `work/` folder there lets a stopped batch go on; delete it once every slide is done.")
    for name in names:
        paths = output_paths(folder, name)
        label, *buttons = st.columns([2, 1, 1])
        label.markdown(f"**{name}**")
        for column, (kind, (text, mime)) in zip(buttons, DOWNLOADS.items(), strict=True):
            size = paths[kind].stat().st_size
            if size > MAX_DOWNLOAD_BYTES:
                column.caption(f"{paths[kind].name}: {size / 2 ** 20:,.0f} MiB, too large to download here; "
                               "copy it from the folder above")
                continue
            column.download_button(text, paths[kind].read_bytes, file_name=paths[kind].name,
                                   mime=mime, on_click="ignore", key=f"slide-{run_id}-{name}-{kind}")
