"""Batch: a finished run over whole slides on the server (a folder or a list), on the server's Dask cluster or a
local one, with each slide's progress and its outputs under the project's folder."""

import streamlit as st

from dashboard.batch import (
    BatchSettings,
    batch_panel,
    configured_scheduler,
    interrupted_section,
    outputs_section,
    readable_slides,
    submit_batch,
)
from dashboard.state import PAGES, data_root, require_project, show_input_errors, user, user_errors
from dashboard.training import run_label, runs_with_checkpoints
from impartial.slides import DEFAULT_CHUNK, DEFAULT_MARGIN

project = require_project()
st.title(f"Batch · {project.name}")
# a run still training changes its checkpoints under the batch: only runs that have ended
finished = {info.id: info for info in runs_with_checkpoints(project) if info.status.get("state") != "running"}
if not finished:
    st.info("No finished run yet: a batch predicts slides with a run that has ended and saved a checkpoint.")
    st.page_link(PAGES["train"], label="Train a model")
    st.stop()

run_id = st.selectbox("Run", list(finished), format_func=lambda key: run_label(finished[key]))
scheduler = configured_scheduler()
with st.form("batch"):
    entries = st.text_area(
        "Slides on the server", placeholder=f"{data_root() / 'imports' / 'cohort'}\n/slides/case_12.ome.tif",
        help="One path a line: an OME-TIFF, a TIFF, an OME-Zarr folder, or a folder of them. Your projects' "
             "folders, the data root's imports/ folder, and folders the administrator lists in "
             "IMPARTIAL_IMPORT_ROOTS")
    address, workers = st.columns([3, 1])
    chosen_scheduler = address.text_input(
        "Dask scheduler", value=scheduler, placeholder="tcp://HOST:8786",
        help="The server's cluster (IMPARTIAL_DASK_SCHEDULER) unless changed; empty: a local cluster on this server")
    local_workers = workers.number_input("Local workers", 1, 64, 1,
                                         help="Worker processes of the local cluster (when no scheduler is given)")
    with st.expander("Chunks"):
        chunk = st.number_input("Chunk side (px)", 64, 8192, DEFAULT_CHUNK, step=32,
                                help="Each chunk is predicted with the network's context and this margin around it")
        margin = st.number_input("Margin (px)", 0, 1024, DEFAULT_MARGIN, step=16,
                                 help="Context for the cells at a chunk's border: more than a cell is wide")
    start = st.form_submit_button("Start", icon=":material/play_arrow:", type="primary")
if start:
    slides, refused = readable_slides(entries, data_root(), user())
    show_input_errors(refused)
    if slides and not refused:
        with user_errors():
            submit_batch(project, run_id, slides, BatchSettings(chosen_scheduler.strip(), int(local_workers),
                                                                int(chunk), int(margin)))
            st.rerun()

st.subheader("Progress")
interrupted_section(project)
batch_panel(project)
st.subheader(f"Outputs of run {run_id}")
outputs_section(project, run_id)
