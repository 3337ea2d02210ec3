"""Dataset: upload or import images and labels, name and colour the channels, choose the tasks."""

import numpy as np
import streamlit as st

from dashboard import keys
from dashboard.images import project_composite
from dashboard.state import damaged_images, require_project, user_errors
from dashboard.uploads import (
    IMAGE_TYPES,
    LABEL_TYPES,
    add_label_upload,
    add_uploads,
    import_server_folder,
    show_upload_messages,
)
from impartial.config import TASK_PRESETS
from impartial.errors import InputError

THUMBNAIL_SIDE = 256
THUMBNAILS_PER_ROW = 4
PRESET_NAMES = {"whole_cell": "whole cell", "vectra": "cytoplasm + nuclei in / out (MIBI, Vectra)",
                "tissuenet": "whole cell + nucleus (TissueNet)"}

project = require_project()
st.title(f"Dataset · {project.name}")
damaged = damaged_images(project, "They are left out of scribbling and training.")
uploads = st.session_state.setdefault(keys.UPLOAD_GENERATION, 0)  # a new key empties the uploaders after use

add_tab, labels_tab, folder_tab = st.tabs(["Upload images", "Upload labels", "Import a server folder"])
with add_tab, st.form(f"images-{uploads}"):
    files = st.file_uploader("Images (TIFF / OME-TIFF, PNG, JPEG, npz, TissueNet npz)", type=IMAGE_TYPES,
                             accept_multiple_files=True)
    taken = st.radio("When the project has an image of the same name", ["keep both", "replace"], horizontal=True,
                     format_func={"keep both": "Keep both (the new one gets a new name)",
                                  "replace": "Replace it (its labels and scribbles are deleted)"}.get,
                     key="upload_name_taken")
    if st.form_submit_button("Add images") and files:
        add_uploads(project, files, replace=taken == "replace")
        # a fresh, empty uploader at once: a second upload goes to the form that is on screen
        st.session_state[keys.UPLOAD_GENERATION] += 1
        st.rerun()
show_upload_messages()

with labels_tab:
    if [name for name in project.images() if name not in damaged]:
        with st.form(f"labels-{uploads}"):
            image = st.selectbox("Image", [name for name in project.images() if name not in damaged])
            file = st.file_uploader("Instance labels (TIFF, PNG, npz, ImageJ ROI zip)", type=LABEL_TYPES)
            if st.form_submit_button("Attach labels") and file and add_label_upload(project, image, file):
                st.session_state[keys.UPLOAD_GENERATION] += 1
    else:
        st.caption("Add images first.")

with folder_tab, st.form("import-folder"):
    folder = st.text_input("Folder or TissueNet .npz on the server", placeholder="/data/imports/tissuenet_test.npz",
                           help="With logins on: your projects' folders, the data root's imports/ folder, or "
                                "folders the administrator lists in IMPARTIAL_IMPORT_ROOTS")
    if st.form_submit_button("Import") and folder.strip():
        import_server_folder(project, folder.strip())

st.subheader("Channels")
with st.form("channels"):
    names, colors, contrast = [], [], []
    settings = zip(project.channels, project.colors, project.contrast, strict=True)
    for index, (name, color, (low, high)) in enumerate(settings):
        name_col, color_col, contrast_col = st.columns([2, 1, 3])
        names.append(name_col.text_input(f"Channel {index + 1} name", value=name))
        colors.append(color_col.color_picker("Colour", value=color, key=f"color-{index}"))
        contrast.append(list(contrast_col.slider("Contrast (percentiles)", 0.0, 100.0, (float(low), float(high)),
                                                 step=0.1, key=f"contrast-{index}")))
    if st.form_submit_button("Save channels"):
        with user_errors():
            project.set_channels(names, colors, contrast)
            st.rerun()

st.subheader("Pixel size")
with st.form("pixel_size"):
    known = project.pixel_size_um is not None
    microns = st.number_input("Side of a pixel (µm)", min_value=0.0, value=project.pixel_size_um or 0.0,
                              step=0.01, format="%.4f", help="0 = unknown. With a pixel size the per-cell tables "
                              "give areas in µm² and centroids in µm besides pixels.")
    if st.form_submit_button("Save pixel size"):
        with user_errors():
            project.set_pixel_size(microns or None)
            st.rerun()
st.caption(f"Pixel size: {project.pixel_size_um} µm" if known else "Pixel size unknown: sizes are in pixels.")

st.subheader("Tasks")
current = next((key for key, make in TASK_PRESETS.items()
                if [t.classes for t in make()] == [t.classes for t in project.tasks]), None)
st.write("Classes: " + "; ".join(f"**{task.name}**: {', '.join(task.classes)}" for task in project.tasks))
with st.form("tasks"):
    keys = list(TASK_PRESETS)
    preset = st.selectbox("Preset", keys, index=keys.index(current) if current else 0, format_func=PRESET_NAMES.get)
    reset = st.checkbox("Delete existing scribbles if the classes change")
    if st.form_submit_button("Apply tasks"):
        with user_errors():
            project.set_tasks(TASK_PRESETS[preset](), reset_scribbles=reset)
            st.rerun()

st.subheader(f"Images ({len(project.images())})")
scribbled = set(project.scribbled_images())
for start in range(0, len(project.images()), THUMBNAILS_PER_ROW):
    row = project.images()[start:start + THUMBNAILS_PER_ROW]
    for column, name in zip(st.columns(THUMBNAILS_PER_ROW)[:len(row)], row, strict=True):
        with column:
            marks = [mark for mark, present in (("labels", (project.dir / "labels" / f"{name}.tif").exists()),
                                                ("scribbled", name in scribbled)) if present]
            try:
                picture = None if name in damaged else project_composite(project, name)
            except InputError as error:  # damage the header check cannot see (e.g. corrupt compressed pixels)
                picture, damaged = None, damaged | {name}
                st.caption(error.problem)
            if picture is None:
                st.markdown(f":material/broken_image: **{name}** · damaged (see above)")
            else:
                step = max(1, int(np.ceil(max(picture.shape[:2]) / THUMBNAIL_SIDE)))
                st.image(picture[::step, ::step], caption=f"{name} {'· ' + ', '.join(marks) if marks else ''}")
            with st.popover("Delete", icon=":material/delete:"):
                st.write(f"Delete **{name}** with its labels and scribbles?")
                if st.button("Delete for good", key=f"delete-{name}", type="primary"):
                    project.delete_image(name)
                    st.rerun()
