"""Train: settings, Start / Stop / Resume / Fine-tune, and live progress of the background job."""

from pathlib import Path

import pandas as pd
import streamlit as st

from dashboard import keys
from dashboard.learning import learning_section
from dashboard.state import damaged_images, require_project, user_errors
from dashboard.trainform import settings_form
from dashboard.training import (
    RESUMABLE,
    epoch_count,
    format_seconds,
    live_panel,
    run_label,
    runs_with_checkpoints,
    submit_training,
    training_in_progress,
)
from impartial.config import RunConfig, preset_config
from impartial.runs import Run, can_resume
from impartial.scribbles import missing_sides

project = require_project()
st.title(f"Train · {project.name}")
if not project.images():
    st.info("Add images and scribbles first.")
    st.stop()
damaged = damaged_images(project, "They are left out of training, which uses the other images.")
busy = training_in_progress(project)  # one training of a project at a time: Start waits for this one
layout = preset_config("quick", tasks=project.tasks)  # only the tasks matter: they give the scribble layout
scribbled = [project.load_scribbles(name) for name in project.scribbled_images()]
# without any scribbles Start says so itself; with some, a task missing a side cannot learn
one_sided = missing_sides(scribbled, layout) if scribbled else []


def start(config: RunConfig, preview_name: str | None, init_from: Path | None = None,
          run_dir: Path | None = None) -> None:
    """Queue the training; an InputError (no scribbles, one-sided scribbles, a training of the project going on,
    bad settings) becomes an error box.

    Damaged images are left out of the training set by the project; a damaged preview image means no preview.
    """
    if preview_name in damaged:
        preview_name = None
    with user_errors():
        submit_training(project, config, preview_name, init_from=init_from, run_dir=run_dir)
        st.rerun()


def resume_control() -> None:
    """Resume a stopped, interrupted or failed run that kept its training state (none while one trains)."""
    resumable = [info for info in project.runs()
                 if info.status.get("state") in RESUMABLE and can_resume(info.dir)]
    if not resumable or busy is not None:
        return
    by_id = {info.id: info for info in resumable}
    chosen = by_id[st.selectbox("Resume a stopped or interrupted run", list(by_id),
                                format_func=lambda run_id: run_label(by_id[run_id]))]
    if st.button("Resume", icon=":material/play_arrow:"):
        start(Run.load(chosen.dir).config, st.session_state.get(keys.PREVIEW_IMAGE), run_dir=chosen.dir)


def runs_table() -> None:
    """Every run of the project with its state; refreshed with the progress while a training runs."""
    st.subheader("Runs")
    runs = project.runs()
    if not runs:
        st.caption("Runs appear here once training starts.")
        return
    st.dataframe(pd.DataFrame([{"run": info.id, "state": info.status.get("state"),
                                "epoch": epoch_count(info.status),
                                "elapsed": format_seconds(info.status.get("elapsed_s")),
                                "message": info.status.get("message", "")} for info in runs]), hide_index=True)


settings, progress = st.columns([2, 3])
with settings:
    for gap in one_sided:
        st.warning(gap.message(several_tasks=len(project.tasks) > 1) + " Start is off until then.",
                   icon=":material/warning:")
    if busy is not None:
        st.info(busy, icon=":material/hourglass_top:")
    request = settings_form(project, runs_with_checkpoints(project), blocked=busy is not None or bool(one_sided))
    if request is not None:
        start(request.config, request.preview_name, init_from=request.init_from)
with progress:
    st.subheader("Progress")
    if busy is None and not project.runs():
        st.caption("No training yet: choose the settings and press Start.")
    live_panel(project, below=runs_table)
    resume_control()
learning_section(project)
