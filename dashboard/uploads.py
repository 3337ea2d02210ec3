"""Uploaded files into a project: size check, then the project's own readers; one message per bad file."""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from streamlit.runtime.uploaded_file_manager import UploadedFile

from impartial.access import check_upload_size
from impartial.errors import InputError
from impartial.project import Project, check_importable, import_roots_from_environment

from . import keys
from .state import data_root, show_input_errors, user, user_errors

# What an upload said, kept across the rerun that empties the uploader: shown by show_upload_messages().
MESSAGES_KEY = keys.UPLOAD_MESSAGES
IMAGE_TYPES = ["tif", "tiff", "png", "jpg", "jpeg", "npz"]
LABEL_TYPES = ["tif", "tiff", "png", "npz", "zip"]


def add_uploads(project: Project, files: list[UploadedFile], replace: bool = False) -> list[str]:
    """Add uploaded images to the project (``replace``: a file whose name is taken replaces that image);
    returns the added names.

    The good files of an upload go in even when others fail. An error naming each bad file and the list of
    added ones are kept for :func:`show_upload_messages`, so they survive the rerun that follows an upload.
    """
    accepted, errors = [], []
    for file in files:
        try:
            check_upload_size(file.name, file.size)
        except InputError as error:
            errors.append(error)
        else:
            accepted.append((file.name, file.getvalue()))
    names, read_errors = project.add_images(accepted, replace=replace)
    messages = [("error", str(error)) for error in errors + read_errors]
    if names:
        verb = "Added or replaced" if replace else "Added"
        messages.append(("success", f"{verb} {len(names)} image(s): {', '.join(names)}"))
    st.session_state[MESSAGES_KEY] = st.session_state.get(MESSAGES_KEY, []) + messages
    return names


def show_upload_messages() -> None:
    """Show (once) what the last uploads said."""
    for kind, text in st.session_state.pop(MESSAGES_KEY, []):
        if kind == "success":
            st.success(text)
        else:
            st.error(text, icon=":material/error:")


def add_label_upload(project: Project, image: str, file: UploadedFile) -> bool:
    """Attach an uploaded label file to ``image``; an error box naming the file when it does not fit."""
    with user_errors():
        check_upload_size(file.name, file.size)
        project.add_labels(image, file.name, file.getvalue())
        st.success(f"Labels from {file.name} attached to {image}")
        return True
    return False


def import_server_folder(project: Project, folder: str) -> list[str]:
    """Import a folder (or TissueNet .npz) on the server.

    With logins on, only the folders :func:`impartial.project.check_importable` allows may be read, so users can
    neither browse the server nor copy another user's private project.
    """
    path = Path(folder).expanduser()
    try:
        if user() is not None:
            path = check_importable(path, data_root(), user(), import_roots_from_environment())
        names, errors = project.import_folder(path)
    except InputError as error:
        names, errors = [], [error]
    show_input_errors(errors)
    if names:
        st.success(f"Imported {len(names)} image(s) from {folder}")
    return names
