"""Scribble: paint a few cells and some background on the image; every stroke is saved at once."""

import numpy as np
import streamlit as st

from dashboard import images
from dashboard.annotate import ENTROPY_OPACITY, Overlay, brushes_for, uncertain_tiles
from dashboard.canvas import brush_counts, scribble_canvas
from dashboard.render import colormap
from dashboard.state import PAGES, damaged_images, job_owner, require_project, show_input_errors
from dashboard.training import runs_with_checkpoints
from impartial.errors import InputError
from impartial.runs import Run

SUGGESTION_TILE = 32
SUGGESTIONS = 5
REFRESH_S = 2  # others' strokes show up within this
GOTO_KEY = "scribble_goto"

project = require_project()
st.title(f"Scribble · {project.name}")
damaged = damaged_images(project, "They are left out of the image list here.")
names = [name for name in project.images() if name not in damaged]
if not names:
    st.info("This project has no usable images yet." if damaged else "This project has no images yet.")
    st.page_link(PAGES["dataset"], label="Add images on the Dataset page")
    st.stop()


def go_to(top: int, left: int) -> None:
    """Show a suggested tile with some context around it (button callback)."""
    nonce = st.session_state.get(GOTO_KEY, {}).get("nonce", 0) + 1
    st.session_state[GOTO_KEY] = {"top": top - SUGGESTION_TILE, "left": left - SUGGESTION_TILE,
                                  "height": 3 * SUGGESTION_TILE, "width": 3 * SUGGESTION_TILE, "nonce": nonce}


brushes = brushes_for(project.tasks)
user = job_owner()
tools, board = st.columns([1, 4])
with tools:
    name = st.selectbox("Image", names, key="scribble_image")
    shape = project.image_shape(name)
    has_labels = project.load_labels(name) is not None
    finished = runs_with_checkpoints(project)
    run = Run.load(finished[0].dir) if finished else None
    show_entropy = st.checkbox("Uncertainty (entropy) of the last run", disabled=run is None)
    show_cells = st.checkbox("Cell outlines of the last run", disabled=run is None)
    show_labels = st.checkbox("Outlines of the labels", disabled=not has_labels,
                              help=None if has_labels else "This image has no labels.")
    suggest = st.checkbox("Scribble here next", disabled=run is None,
                          help="The most uncertain regions of the last run's prediction")
    if run is None:
        st.caption("Uncertainty, cells and suggestions appear after a first training run.")

overlay, tiles = Overlay(), []
try:
    if show_entropy or suggest:
        entropy = images.prediction(run, project, name).entropy()
        overlay.entropy = entropy if show_entropy else None
        if suggest:
            tiles = uncertain_tiles(entropy, SUGGESTION_TILE, SUGGESTIONS)
    if show_cells:
        overlay.outlines.append((images.segmentation(run, project, name).cells, "#ffffff"))
    if show_labels:
        overlay.outlines.append((project.load_labels(name), "#ffff00"))
except InputError as error:  # damage the header check cannot see (e.g. corrupt compressed pixels)
    show_input_errors([error])
    st.stop()


@st.fragment(run_every=REFRESH_S)
def canvas_and_counts() -> None:
    """The canvas, rerun on its own every few seconds so strokes from other tabs and users appear."""
    try:
        marks = [{"top": top, "left": left, "size": SUGGESTION_TILE, "label": str(rank)}
                 for rank, (top, left, _) in enumerate(tiles, start=1)]
        problems = scribble_canvas(project, name, brushes, user, overlay, st.session_state.get(GOTO_KEY), marks)
        counts = brush_counts(project, name, brushes)
    except InputError as error:
        show_input_errors([error])
        return
    for problem in problems:
        st.warning(problem)
    st.write("Scribbled: " + " · ".join(f"**{label}** {count.strokes} stroke(s), {count.pixels} px"
                                        for label, count in counts.items()))


with board:
    canvas_and_counts()
    if overlay.entropy is not None:
        legend, words = st.columns([1, 3], vertical_alignment="center")
        legend.image(colormap(np.linspace(0.0, 1.0, 256)[None].repeat(12, axis=0)), width="stretch")
        words.caption(f"Entropy overlay ({ENTROPY_OPACITY:.0%} opacity): left end 0 = the last run is sure, right end "
                      "1 = it cannot tell the classes apart. Scribble where it is bright.")

with tools:
    if tiles:
        st.write("Most uncertain regions (numbered on the canvas):")
        for rank, (top, left, score) in enumerate(tiles, start=1):
            st.button(f"{rank}: row {top}, col {left}", key=f"tile-{rank}", on_click=go_to, args=(top, left),
                      help=f"Mean entropy {score:.2f} in this {SUGGESTION_TILE} px square", width="stretch")
    if has_labels:
        fraction = st.slider("Share of cells to scribble", 0.05, 1.0, 0.2, step=0.05)
        if st.button("Automatic scribbles from labels", icon=":material/auto_fix_high:",
                     help="Replaces this image's scribbles; Undo on the canvas brings them back"):
            try:
                project.auto_scribble(name, fraction=fraction, user=user)
            except InputError as error:
                show_input_errors([error])
    with st.popover("Clear", icon=":material/delete_sweep:"):
        st.write(f"Remove every scribble of **{name}**? Undo on the canvas brings them back.")
        if st.button("Clear all scribbles", type="primary"):
            project.save_scribbles(name, np.zeros((*shape, project.n_scribble_channels), np.uint8), user=user)
