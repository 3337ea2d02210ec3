"""What every page shares: the data root, the server's one job manager, the user and the current project.

The current project lives in ``st.session_state`` (survives page switches) and in the URL's query
parameters (survives a browser reload, which starts a new session).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import streamlit as st
import torch

from impartial.demo import create_demo_project
from impartial.device import native_bfloat16, pick_device, training_slots
from impartial.errors import InputError
from impartial.jobs import JobManager
from impartial.project import Project, data_root_from_env, open_project, safe_name

from . import keys

PROJECT_KEY = keys.PROJECT  # session_state key and URL query parameter
USER_KEY = keys.USER
LOCAL_OWNER = "local"  # job owner when access control is off
PAGES = {"home": "views/0_Projects.py", "dataset": "views/1_Dataset.py", "scribble": "views/2_Scribble.py",
         "train": "views/3_Train.py", "results": "views/4_Results.py", "batch": "views/5_Batch.py"}


def command_line() -> argparse.Namespace:
    """The flags after ``streamlit run app.py --``: ``--data-root DIR`` and ``--demo``.

    Unknown arguments are ignored, so the page also runs under pytest (whose own flags fill sys.argv).
    """
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--data-root")
    parser.add_argument("--demo", action="store_true", help="open the demo project in every new session")
    return parser.parse_known_args(sys.argv[1:])[0]


def data_root() -> Path:
    """Where projects live: ``--data-root``, else ``$IMPARTIAL_DATA``, else ``./impartial-data``."""
    return data_root_from_env(command_line().data_root).resolve()


@st.cache_resource
def job_manager() -> JobManager:
    """The server's single job manager: one training per GPU (or one on the CPU), the rest queued."""
    return JobManager(slots=training_slots())


@st.cache_resource
def device_name() -> str:
    """The GPU's name, or CPU with its thread count; says when it computes in bfloat16 (faster training)."""
    device = pick_device("auto")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    return f"{name} (bfloat16)" if native_bfloat16(device) else name


def set_user(user: str | None) -> None:
    """Remember who is logged in (None: access control is off) for the pages of this session."""
    st.session_state[USER_KEY] = user


def user() -> str | None:
    return st.session_state.get(USER_KEY)


def job_owner() -> str:
    """The owner recorded on jobs: the user, or a fixed name when access control is off."""
    return user() or LOCAL_OWNER


def select_project(name: str | None) -> None:
    """Make ``name`` the current project of this session (None forgets it)."""
    if name is None:
        st.session_state.pop(PROJECT_KEY, None)
        st.query_params.pop(PROJECT_KEY, None)
        return
    st.session_state[PROJECT_KEY] = name
    st.query_params[PROJECT_KEY] = name


def current_project() -> Project | None:
    """The session's project, reopened from disk on every run so all sessions see the same state."""
    name = st.session_state.get(PROJECT_KEY) or st.query_params.get(PROJECT_KEY)
    if not name and command_line().demo and not st.session_state.get(keys.DEMO_OFFERED):
        st.session_state[keys.DEMO_OFFERED] = True
        name = open_demo().name
    if not name:
        return None
    try:
        project = open_project(data_root(), name, user=user())
    except (InputError, PermissionError) as error:
        st.warning(f"Cannot open project '{name}': {error}")
        select_project(None)
        return None
    select_project(project.name)  # page switches drop query parameters: set it again
    return project


def open_demo() -> Project:
    """The demo project (made on first use); with logins on, each user gets their own."""
    name = "demo" if user() is None else safe_name(f"demo_{user()}")
    with st.spinner("Making the demo project ..."):
        return create_demo_project(data_root(), name=name, owner=user())


def require_project() -> Project:
    """The current project, or a pointer to the Projects page and a stopped page."""
    project = current_project()
    if project is None:
        st.info("No project is open. Create or open one on the Projects page.")
        st.page_link(PAGES["home"], label="Go to Projects", icon=":material/folder_open:")
        st.stop()
    return project


def show_input_errors(errors: list[InputError]) -> None:
    """One error box per bad file; the message names the file and the reason."""
    for error in errors:
        st.error(str(error), icon=":material/error:")


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Show an InputError raised in the block as an error box (:func:`show_input_errors`) instead of a traceback:
    the rest of the block is skipped and the page goes on after it."""
    try:
        yield
    except InputError as error:
        show_input_errors([error])


def damaged_images(project: Project, consequence: str) -> set[str]:
    """Warn once about the project's damaged files (each with its problem) and offer to remove each one.

    ``consequence`` says what the page does without them ("They are left out of training."). Returns the
    names of the damaged images, for the page to leave out.
    """
    damaged = project.damaged_files()
    if not damaged:
        return set()
    lines = "\n".join(f"- **{name}**: {_short(error, project)}" for name, error in damaged.items())
    st.warning(f"{len(damaged)} image(s) have a damaged file. {consequence} Remove the damaged file, or delete "
               f"the image and upload it again on the Dataset page.\n\n{lines}", icon=":material/broken_image:")
    for name, error in damaged.items():
        label = Path(error.path).name if error.path else name
        whole = error.path is None or Path(error.path).parent.name == "images"
        if st.button(f"Remove {name} with its labels and scribbles" if whole else f"Remove the damaged {label}",
                     key=f"remove-damaged-{name}", icon=":material/delete:"):
            project.remove_damaged(name)
            st.rerun()
    return set(damaged)


def _short(error: InputError, project: Project) -> str:
    """The problem with the file named relative to the project folder (``scribbles/a.npz: ...``)."""
    if error.path is None:
        return error.problem
    path = Path(error.path)
    shown = path.relative_to(project.dir) if path.is_relative_to(project.dir) else path
    return f"`{shown}`: {error.problem}"
