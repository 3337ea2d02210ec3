"""Projects: create or open a project, open the demo, see the device and the job queue."""

import pandas as pd
import streamlit as st

from dashboard import images, keys
from dashboard.state import (
    PAGES,
    current_project,
    data_root,
    device_name,
    job_manager,
    open_demo,
    select_project,
    user,
    user_errors,
)
from dashboard.training import (
    QueuedRequest,
    active_job,
    discard_request,
    job_line,
    lost_requests,
    queue_again,
    request_line,
    stop_job,
)
from impartial.config import TASK_PRESETS
from impartial.errors import InputError
from impartial.jobs import FINAL_STATES
from impartial.project import create_project, delete_project, list_projects, open_project

st.title("ImPartial")
st.caption("Whole-cell segmentation from a few scribbles, with uncertainty.")

project = current_project()
if project:
    st.success(f"Open project: **{project.name}** ({len(project.images())} images). "
               "Next: check the Dataset, scribble, train.", icon=":material/folder_open:")
    for column, page in zip(st.columns(4), ["dataset", "scribble", "train", "results"], strict=True):
        column.page_link(PAGES[page], label=page.capitalize())

if st.button("Open demo project", type="primary", icon=":material/science:",
             help="Synthetic tissue images with labels and scribbles, ready to train"):
    select_project(open_demo().name)
    st.rerun()

def delete(name: str) -> None:
    """Delete a project after the typed confirmation; refused while it trains or waits for the device."""
    doomed = open_project(data_root(), name, user=user())
    if active_job(doomed) is not None:
        st.error(f"{name} is training or queued: stop its training on the Train page first.", icon=":material/error:")
        return
    images.wait_for_exports(timeout_s=30)  # the Results page's background writer is done with its files
    try:
        delete_project(data_root(), name, user=user())
    except (InputError, PermissionError) as error:
        st.error(f"Cannot delete {name}: {error}", icon=":material/error:")
        return
    if project is not None and project.name == name:
        select_project(None)
    st.session_state.pop(keys.DELETE_PROJECT_CONFIRM, None)
    st.toast(f"Deleted {name}. An administrator can bring it back from the data root's 'deleted' folder.")
    st.rerun()


left, right = st.columns(2)
with left:
    st.subheader("Open a project")
    projects = list_projects(data_root(), user=user())
    if projects:
        names = [info.name for info in projects]
        index = names.index(project.name) if project and project.name in names else 0
        chosen = st.selectbox("Project", names, index=index)
        if st.button("Open", icon=":material/folder_open:"):
            select_project(chosen)
            st.rerun()
        st.dataframe(pd.DataFrame([{"project": info.name, "images": info.n_images, "channels": ", ".join(info.channels),
                                    "owner": info.owner or "–", "shared": info.shared} for info in projects]),
                     hide_index=True)
        deletable = [info.name for info in projects if user() is None or info.owner in (None, user())]
        if deletable:
            with st.popover("Delete a project", icon=":material/delete:"):
                doomed = st.selectbox("Project to delete", deletable, key="delete_project_name")
                typed = st.text_input(f"Type **{doomed}** to confirm", key=keys.DELETE_PROJECT_CONFIRM)
                if st.button("Delete project", type="primary", disabled=typed != doomed):
                    delete(doomed)
    else:
        st.caption(f"No projects yet under `{data_root()}`.")

with right:
    st.subheader("New project")
    with st.form("new_project"):
        name = st.text_input("Name", placeholder="my_tissue", help="Letters, digits, '.', '_' and '-'")
        channels = st.text_input("Channels (comma separated)", value="membrane, nuclear",
                                 help="The first uploaded image may change the number of channels")
        tasks = st.selectbox("Tasks", list(TASK_PRESETS), format_func=lambda key: key.replace("_", " "))
        shared = st.checkbox("Share with every user", disabled=user() is None,
                             help="Only matters on a shared server with logins")
        if st.form_submit_button("Create"):
            with user_errors():
                channel_names = [channel.strip() for channel in channels.split(",") if channel.strip()]
                created = create_project(data_root(), name.strip(), channel_names, TASK_PRESETS[tasks](),
                                         owner=user(), shared=shared)
                select_project(created.name)
                st.rerun()

st.subheader("Device and jobs")
st.write(f"Training runs on: **{device_name()}**. One training runs per GPU, or one on the CPU; the others "
         "wait in the queue, command-line runs on this server included.")
waiting = [job for job in job_manager().jobs() if job.state not in FINAL_STATES]
if not waiting:
    st.caption("No jobs running or queued.")
visible = {info.name for info in projects}
for job in waiting:
    line, button = st.columns([5, 1])
    line.write(job_line(job, visible))
    if user() in (None, job.owner):
        button.button("Cancel", key=f"home-cancel-{job.id}", on_click=stop_job, args=(job,))

# the queue lives in memory: trainings queued before a server restart are left as request files
lost = [request for request in lost_requests(projects) if user() in (None, request.owner)]
if lost:
    st.warning("These trainings were queued but never started: the server restarted. Queue them again or "
               "discard them.", icon=":material/restart_alt:")


def _queue_again(request: QueuedRequest) -> None:
    try:
        queue_again(request)
    except (InputError, PermissionError) as error:
        st.error(f"Cannot queue {request.label} of {request.project} again: {error}", icon=":material/error:")


for request in lost:
    line, again, discard = st.columns([4, 1, 1])
    line.write(request_line(request))
    again.button("Queue again", key=f"requeue-{request.id}", on_click=_queue_again, args=(request,))
    discard.button("Discard", key=f"discard-{request.id}", on_click=discard_request, args=(request,))
