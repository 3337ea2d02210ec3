"""Scribble: paint a few cells and some background on the image; every stroke is saved at once."""

import numpy as np
import streamlit as st
from PIL import Image

from dashboard import images
from dashboard.annotate import (
    brushes_for,
    canvas_size,
    paint_scribbles,
    scribble_counts,
    tile_frames,
    uncertain_tiles,
    zoom_region,
)
from dashboard.canvas import canvas_mount, remount, scribble_canvas
from dashboard.render import blend, colormap, outline, tint
from dashboard.state import PAGES, damaged_images, require_project, show_input_errors
from dashboard.training import runs_with_checkpoints
from impartial.errors import InputError
from impartial.runs import Run

CANVAS_SIDE = 640  # canvas pixels along the region's longer side
SUGGESTION_TILE = 32
SUGGESTIONS = 5
ZOOMS = [1, 2, 4, 8]

project = require_project()
st.title(f"Scribble · {project.name}")
damaged = damaged_images(project, "They are left out of the image list here.")
names = [name for name in project.images() if name not in damaged]
if not names:
    st.info("This project has no usable images yet." if damaged else "This project has no images yet.")
    st.page_link(PAGES["dataset"], label="Add images on the Dataset page")
    st.stop()


def go_to(top: int, left: int, shape: tuple[int, int]) -> None:
    """Zoom onto a suggested tile (button callback: runs before the sliders are drawn)."""
    st.session_state["zoom"] = 4
    st.session_state["center_y"] = (top + SUGGESTION_TILE / 2) / shape[0]
    st.session_state["center_x"] = (left + SUGGESTION_TILE / 2) / shape[1]


brushes = brushes_for(project.tasks)
tools, board = st.columns([1, 3])
with tools:
    name = st.selectbox("Image", names, key="scribble_image")
    shape = project.image_shape(name)
    choice = st.radio("Brush", range(len(brushes)), format_func=lambda index: brushes[index].label, key="brush")
    st.markdown(" ".join(f"<span style='color:{b.color}'>■</span> {b.label}" for b in brushes),
                unsafe_allow_html=True)
    width = st.slider("Brush width (image pixels)", 1, 30, 3, key="brush_width")
    zoom = st.select_slider("Zoom", ZOOMS, key="zoom")
    for axis in ("center_y", "center_x"):
        st.session_state.setdefault(axis, 0.5)  # set here, not as the sliders' value: go_to() may set them too
    center_y = st.slider("Centre (down)", 0.0, 1.0, key="center_y", disabled=zoom == 1)
    center_x = st.slider("Centre (across)", 0.0, 1.0, key="center_x", disabled=zoom == 1)
    finished = runs_with_checkpoints(project)
    run = Run.load(finished[0].dir) if finished else None
    show_entropy = st.checkbox("Uncertainty (entropy) of the last run", disabled=run is None)
    show_outlines = st.checkbox("Cell outlines of the last run", disabled=run is None)
    suggest = st.checkbox("Scribble here next", disabled=run is None,
                          help="The most uncertain regions of the last run's prediction")
    if run is None:
        st.caption("Overlays appear after a first training run.")

region = zoom_region(shape, zoom, center_y, center_x)
mount = canvas_mount(project, name, region)
try:
    picture = paint_scribbles(images.project_composite(project, name), mount.base, brushes)
except InputError as error:  # damage the header check cannot see (e.g. corrupt compressed pixels)
    show_input_errors([error])
    st.stop()
tiles = []
if show_entropy or suggest:
    entropy = images.prediction(run, project, name).entropy()
    if show_entropy:
        picture = blend(picture, colormap(entropy), 0.45)
    if suggest:
        tiles = uncertain_tiles(entropy, SUGGESTION_TILE, SUGGESTIONS)
        picture = tint(picture, tile_frames(shape, tiles, SUGGESTION_TILE), "#00ffff", 1.0)
if show_outlines:
    picture = outline(picture, images.segmentation(run, project, name).cells, "#ffffff", 0.9)

window = picture[region.slices()]
canvas_h, canvas_w = canvas_size(region, CANVAS_SIDE)
background = np.asarray(Image.fromarray(window).resize((canvas_w, canvas_h), Image.Resampling.NEAREST))
with board:
    scribbles = scribble_canvas(mount, project, background, brushes, brushes[choice], width * canvas_w / region.width)
    st.caption(f"Showing rows {region.top}–{region.top + region.height}, columns {region.left}–"
               f"{region.left + region.width} of {shape[0]} x {shape[1]}. Undo / redo with the canvas toolbar; "
               "strokes are saved as you draw.")
    counts = scribble_counts(scribbles, brushes)
    st.write("Scribbled pixels: " + ", ".join(f"**{label}** {count}" for label, count in counts.items()))

with tools:
    if tiles:
        st.write("Most uncertain regions:")
        for rank, (top, left, score) in enumerate(tiles, start=1):
            st.button(f"{rank}. rows {top}, cols {left} (entropy {score:.2f})", key=f"tile-{rank}",
                      on_click=go_to, args=(top, left, shape))
    if (project.dir / "labels" / f"{name}.tif").exists():
        fraction = st.slider("Share of cells to scribble", 0.05, 1.0, 0.2, step=0.05)
        if st.button("Automatic scribbles from labels", icon=":material/auto_fix_high:"):
            try:
                project.auto_scribble(name, fraction=fraction)
                remount()
                st.rerun()
            except InputError as error:
                show_input_errors([error])
    with st.popover("Clear", icon=":material/delete_sweep:"):
        st.write(f"Remove every scribble of **{name}**?")
        if st.button("Clear all scribbles", type="primary"):
            project.save_scribbles(name, np.zeros_like(scribbles))
            remount()
            st.rerun()
