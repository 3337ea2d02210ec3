"""Scribble: paint a few cells and some background on the image; every stroke is saved at once."""

import dataclasses

import numpy as np
import streamlit as st

from dashboard import images, keys
from dashboard.annotate import HEAT_OPACITY, Overlay, brushes_for
from dashboard.canvas import brush_counts, scribble_canvas
from dashboard.render import colour_bar
from dashboard.state import PAGES, damaged_images, job_owner, require_project, user_errors
from dashboard.training import live_job, runs_with_checkpoints, stop_job, submit_training, training_in_progress
from impartial.config import CELL_CLASSES
from impartial.errors import InputError
from impartial.live import LIVE_MINUTES, live_config
from impartial.runs import Run, focus, read_preview, set_focus
from impartial.suggest import gain_maps, suggest_regions

SUGGESTION_TILE = 32
SUGGESTIONS = 5
REFRESH_S = 2  # others' strokes show up within this

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
    nonce = st.session_state.get(keys.SCRIBBLE_GOTO, {}).get("nonce", 0) + 1
    st.session_state[keys.SCRIBBLE_GOTO] = {"top": top - SUGGESTION_TILE, "left": left - SUGGESTION_TILE,
                                  "height": 3 * SUGGESTION_TILE, "width": 3 * SUGGESTION_TILE, "nonce": nonce}


def start_live(image: str) -> None:
    """Start live mode on this project, previewing ``image`` (button callback)."""
    try:
        submit_training(project, live_config(project), image, live=True)
    except InputError as error:
        st.session_state[keys.LIVE_MODE_ERROR] = str(error)


def live_controls() -> None:
    """Start or stop live mode: training goes on while you scribble and the canvas shows its latest prediction."""
    job = live_job(project)
    if job is not None:
        st.button("Stop live mode", icon=":material/stop:", on_click=stop_job, args=(job,), type="primary",
                  help="Ends the run as a normal one (checkpoints, thresholds): fine-tune it on the Train page")
        return
    busy = training_in_progress(project)
    st.button("Live mode", icon=":material/bolt:", on_click=start_live, args=(name,), disabled=busy is not None,
              help=busy or f"Trains in the background while you scribble (up to {LIVE_MINUTES:.0f} min): every "
                           "new stroke is used within seconds and the canvas shows the newest prediction")
    if keys.LIVE_MODE_ERROR in st.session_state:
        st.error(st.session_state.pop(keys.LIVE_MODE_ERROR), icon=":material/error:")


def live_overlay(base: Overlay) -> tuple[Overlay, str | None]:
    """``base`` with live mode's latest cell probability of this image as its heat map, and a line saying how
    fresh it is; ``base`` unchanged without live mode."""
    job = live_job(project)
    run_dir = job.progress.get("run_dir") if job is not None else None
    if run_dir is None:
        return base, "Live mode is starting ..." if job is not None else None
    if focus(run_dir) != name:
        set_focus(run_dir, name)
    preview = read_preview(run_dir)
    if preview is None or preview.image != name or preview.probabilities.shape[1:] != shape:
        return base, f"Live mode: training (epoch {job.progress.get('epoch', 0)}); its first look at {name} is coming."
    cells = sum(probability for label, probability in zip(preview.class_names, preview.probabilities, strict=True)
                if label in CELL_CLASSES)
    return (dataclasses.replace(base, heat=np.clip(cells, 0.0, 1.0)),
            f"Live mode: the overlay is the cell probability after epoch {preview.epoch}.")


brushes = brushes_for(project.tasks)
user = job_owner()
tools, board = st.columns([1, 4])
with tools:
    name = st.selectbox("Image", names, key="scribble_image")
    shape = project.image_shape(name)
    has_labels = project.has_labels(name)
    finished = runs_with_checkpoints(project)
    run = Run.load(finished[0].dir) if finished else None
    show_entropy = st.checkbox("Uncertainty (entropy) of the last run", disabled=run is None)
    show_cells = st.checkbox("Cell outlines of the last run", disabled=run is None)
    show_labels = st.checkbox("Outlines of the labels", disabled=not has_labels,
                              help=None if has_labels else "This image has no labels.")
    suggest = st.checkbox("Scribble here next", disabled=run is None,
                          help="Regions where a stroke should teach the last run most: it is unsure, its passes "
                               "disagree, or a cell looks like several merged; spread over the image")
    if run is None:
        st.caption("Uncertainty, cells and suggestions appear after a first training run.")
    live_controls()

overlay, suggestions, ready = Overlay(), [], False
with user_errors():  # damage the header check cannot see (e.g. corrupt compressed pixels)
    if show_entropy:
        overlay.heat = images.prediction(run, project, name).entropy()
    if suggest:
        prediction, cells = images.prediction(run, project, name), images.segmentation(run, project, name).cells
        maps = gain_maps(prediction.entropy(), prediction.tasks[0].class_segmentation_variance.sum(axis=0), cells)
        suggestions = suggest_regions(maps, project.load_scribbles(name), count=SUGGESTIONS, size=SUGGESTION_TILE,
                                      skip=frozenset(project.suggestion_states(name)))
    if show_cells:
        overlay.outlines.append((images.segmentation(run, project, name).cells, "#ffffff"))
    if show_labels:
        overlay.outlines.append((project.load_labels(name), "#ffff00"))
    ready = True
if not ready:
    st.stop()


@st.fragment(run_every=REFRESH_S)
def canvas_and_counts() -> None:
    """The canvas, rerun on its own every few seconds so strokes from other tabs and users (and live mode's newest
    prediction) appear."""
    shown, live_line = live_overlay(overlay)
    marks = [{"top": found.top, "left": found.left, "size": found.size, "label": str(rank)}
             for rank, found in enumerate(suggestions, start=1)]
    with user_errors():
        problems = scribble_canvas(project, name, brushes, user, shown, st.session_state.get(keys.SCRIBBLE_GOTO),
                                   marks)
        counts = brush_counts(project, name, brushes)
        for problem in problems:
            st.warning(problem)
        st.write("Scribbled: " + " · ".join(f"**{label}** {count.strokes} stroke(s), {count.pixels} px"
                                            + ("" if count.cells is None else f" in {count.cells} labelled cell(s)")
                                            for label, count in counts.items()))
        if live_line:
            st.caption(live_line)


with board:
    canvas_and_counts()
    if overlay.heat is not None or live_job(project) is not None:
        legend, words = st.columns([1, 3], vertical_alignment="center")
        legend.image(colour_bar(), width="stretch")
        words.caption(f"Colour overlay ({HEAT_OPACITY:.0%} opacity), from left 0 to right 1: with live mode the cell "
                      "probability; otherwise the last run's entropy (1 = it cannot tell the classes apart: scribble "
                      "where it is bright).")

with tools:
    if suggestions:
        st.write("Scribble here next (numbered on the canvas):")
        for rank, found in enumerate(suggestions, start=1):
            go, done, skip = st.columns([3, 1, 1], gap="small")
            go.button(f"{rank}: row {found.top}, col {found.left}", key=f"tile-{rank}", on_click=go_to,
                      args=(found.top, found.left), width="stretch",
                      help=f"Mostly {found.reason} (score {found.score:.2f}) in this {found.size} px square")
            done.button("✓", key=f"tile-done-{rank}", help="Done: I scribbled there",
                        on_click=project.mark_suggestion, args=(name, found.key, "done"))
            skip.button("✗", key=f"tile-skip-{rank}", help="Skip: nothing to scribble there",
                        on_click=project.mark_suggestion, args=(name, found.key, "skipped"))
    elif suggest:
        st.caption("No region left to suggest: every candidate holds strokes or was marked.")
    if has_labels:
        fraction = st.slider("Share of cells to scribble", 0.05, 1.0, 0.2, step=0.05)
        if st.button("Automatic scribbles from labels", icon=":material/auto_fix_high:",
                     help="Replaces this image's scribbles; Undo on the canvas brings them back"):
            with user_errors():
                project.auto_scribble(name, fraction=fraction, user=user)
    with st.popover("Clear", icon=":material/delete_sweep:"):
        st.write(f"Remove every scribble of **{name}**? Undo on the canvas brings them back.")
        if st.button("Clear all scribbles", type="primary"):
            project.save_scribbles(name, np.zeros((*shape, project.n_scribble_channels), np.uint8), user=user)
