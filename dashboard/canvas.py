"""The drawing canvas bound to a project image: strokes in, scribbles saved (atomically) on every change.

A canvas is "mounted" for one view (project, image, region, class layout). At mount the saved
scribbles become its base, drawn into the background picture; the canvas then holds only the new
strokes, and every change saves base + strokes. A new view, a page visit (Streamlit forgets an
unrendered widget) or :func:`remount` starts a fresh canvas over the scribbles saved so far.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import streamlit as st
from PIL import Image
from streamlit_drawable_canvas import st_canvas

from impartial.project import Project

from .annotate import Brush, Region, apply_strokes, stroke_brushes

MOUNT_KEY = "scribble_canvas_mount"


@dataclass
class CanvasMount:
    """One canvas over one view; ``base`` is what to draw into its background."""

    view: tuple
    name: str
    region: Region
    key: str
    base: np.ndarray  # (H, W, S) uint8 scribbles saved when the canvas was mounted
    saved_digest: str


def _digest(scribbles: np.ndarray) -> str:
    return hashlib.sha1(scribbles.tobytes()).hexdigest()


def remount() -> None:
    """Forget the canvas: the next run starts one over the scribbles on disk (after Clear, auto scribbles)."""
    st.session_state.pop(MOUNT_KEY, None)


def canvas_mount(project: Project, name: str, region: Region) -> CanvasMount:
    """The canvas of this view: the session's one, or a new one over the scribbles saved so far."""
    view = (str(project.dir), name, region, tuple(tuple(task.classes) for task in project.tasks))
    mount = st.session_state.get(MOUNT_KEY)
    if mount is None or mount.view != view or mount.key not in st.session_state:
        counter = st.session_state.get("scribble_canvas_counter", 0) + 1
        st.session_state["scribble_canvas_counter"] = counter
        base = project.load_scribbles(name)
        mount = CanvasMount(view, name, region, f"scribble-canvas-{counter}", base, _digest(base))
        st.session_state[MOUNT_KEY] = mount
    return mount


def scribble_canvas(mount: CanvasMount, project: Project, background: np.ndarray, brushes: list[Brush],
                    brush: Brush, width_px: float) -> np.ndarray:
    """Show the canvas and save what is drawn; returns the image's scribbles (H, W, S) uint8.

    Args:
        background: (h, w, 3) uint8 picture of the region; its size is the canvas size.
        width_px: brush width in canvas pixels.
    """
    height, width = background.shape[:2]
    result = st_canvas(stroke_width=max(1, round(width_px)), stroke_color=brush.color,
                       background_image=Image.fromarray(background), height=height, width=width,
                       drawing_mode="freedraw", return_image_data=True, key=mount.key)
    picture = result.image_data
    if picture is None:
        return mount.base
    scribbles = apply_strokes(mount.base, stroke_brushes(picture, brushes), mount.region, brushes, project.tasks)
    digest = _digest(scribbles)
    if digest != mount.saved_digest:
        project.save_scribbles(mount.name, scribbles)
        mount.saved_digest = digest
    return scribbles
