"""The scribbling canvas on a project image: edits in, pictures of the part in view out.

The browser side (``static/scribble_canvas.js``) zooms, pans, composites channels and draws strokes on its
own; it sends each finished stroke, undo or redo as an *edit* with an id, and asks for a sharper tile when
the view changes. Here every edit is applied to the scribbles on disk through :class:`Project` (locked, so
edits from several tabs and users merge), and the ids applied are sent back so the browser stops showing
them as waiting. Called from a fragment that reruns every few seconds, the canvas also shows what others
drew in the meantime.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from impartial.errors import InputError
from impartial.project import Project
from impartial.strokes import Stroke

from . import images, keys
from .annotate import (
    Brush,
    BrushCount,
    Overlay,
    Region,
    display_levels,
    overlay_layer,
    png_url,
    scribble_counts,
    scribble_layer,
    shrink,
    tile_for_view,
    tile_size,
)

STATIC = Path(__file__).parent / "static"
CANVAS_WIDTH, CANVAS_HEIGHT = 860, 600  # screen pixels
MAX_TILE_SIDE = 1400  # tile pixels: the view is never sent sharper than this
OVERVIEW_SIDE = 384  # the blurred whole image under the tile and in the minimap
MAX_STROKE_POINTS = 20_000
MAX_BRUSH_WIDTH = 60
ACKED_KEY = keys.SCRIBBLE_ACKED_OPS

_logger = logging.getLogger(__name__)
_scribbler = st.components.v2.component("impartial_scribble_canvas",
                                        js=(STATIC / "scribble_canvas.js").read_text(),
                                        css=(STATIC / "scribble_canvas.css").read_text())


@st.cache_data(max_entries=8, show_spinner=False)
def _levels(project_dir: str, name: str, stamp: int, contrast: tuple[tuple[float, float], ...]) -> np.ndarray:
    project = Project(project_dir)
    return display_levels(images.normalized(project, name), [list(pair) for pair in contrast])


def channel_levels(project: Project, name: str) -> np.ndarray:
    """(C, H, W) uint8 grey levels of a project image in its display contrast (cached per image file)."""
    contrast = tuple(tuple(pair) for pair in project.contrast)
    return _levels(str(project.dir), name, project.image_stamp(name), contrast)


@st.cache_data(max_entries=64, show_spinner=False)
def _channel_pictures(project_dir: str, name: str, stamp: int, contrast: tuple[tuple[float, float], ...],
                      tile: Region, size: tuple[int, int]) -> list[str]:
    levels = _levels(project_dir, name, stamp, contrast)[(slice(None), *tile.slices())]
    return [png_url(shrink(channel, size)) for channel in levels]


def channel_pictures(project: Project, name: str, tile: Region, size: tuple[int, int]) -> list[str]:
    """One grey PNG (data URL) per channel of ``tile`` at ``size``."""
    contrast = tuple(tuple(pair) for pair in project.contrast)
    return _channel_pictures(str(project.dir), name, project.image_stamp(name), contrast, tile, size)


@st.cache_data(max_entries=64, show_spinner=False)
def _scribble_picture(project_dir: str, name: str, stamp: tuple[int, int, int], brushes: tuple[Brush, ...],
                      tile: Region, size: tuple[int, int]) -> str:
    scribbles = Project(project_dir).load_scribbles(name)[tile.slices()]
    return png_url(scribble_layer(scribbles, list(brushes), size))


@st.cache_data(max_entries=32, show_spinner=False)
def _counts(project_dir: str, name: str, stamp: tuple[int, int, int], labels_stamp: int | None,
            brushes: tuple[Brush, ...]) -> dict[str, BrushCount]:
    project = Project(project_dir)
    return scribble_counts(project.load_scribbles(name), list(brushes), project.load_labels(name))


def brush_counts(project: Project, name: str, brushes: list[Brush]) -> dict[str, BrushCount]:
    """Strokes, pixels and (with labels) labelled cells per brush of an image's scribbles, computed once per
    version of the scribble and label files."""
    return _counts(str(project.dir), name, project.scribbles_stamp(name), project.annotation_stamp(name)[0],
                   tuple(brushes))


def apply_edits(project: Project, name: str, edits: list[Any], brushes: list[Brush], user: str,
                applied: set[str]) -> tuple[list[str], list[str]]:
    """Apply the browser's edits that are not yet in ``applied`` (updated in place).

    Returns (ids of every edit handled, including ones refused, so the browser stops sending them;
    a message per refused edit). An edit comes from the browser, so it is checked like any upload.
    """
    handled, problems = [], []
    for edit in edits if isinstance(edits, list) else []:
        op = str(edit.get("op", "")) if isinstance(edit, dict) else ""
        if not op:
            continue
        if op not in applied:
            try:
                _apply_edit(project, name, edit, brushes, user, op)
            except (InputError, TypeError, ValueError) as error:
                problems.append(f"An edit of {name} was refused: {error}")
            applied.add(op)
        handled.append(op)
    return handled, problems


def _apply_edit(project: Project, name: str, edit: dict, brushes: list[Brush], user: str, op: str) -> None:
    kind = edit.get("kind")
    if kind == "undo":
        project.undo_stroke(name, user, op)
    elif kind == "redo":
        project.redo_stroke(name, user, op)
    elif kind == "stroke":
        project.draw_stroke(name, _stroke(edit, brushes), user, op)
    else:
        raise ValueError(f"unknown edit {kind!r}")


def _stroke(edit: dict, brushes: list[Brush]) -> Stroke:
    brush, width, points = int(edit["brush"]), float(edit["width"]), edit["points"]
    if not 0 <= brush < len(brushes):
        raise ValueError(f"brush {brush} does not exist")
    if not (isinstance(points, list) and 0 < len(points) <= MAX_STROKE_POINTS):
        raise ValueError(f"a stroke has 1 to {MAX_STROKE_POINTS} points")
    pairs = tuple((float(row), float(col)) for row, col in points)
    if not all(math.isfinite(value) for pair in pairs for value in pair) or not 1 <= width <= MAX_BRUSH_WIDTH:
        raise ValueError("stroke points must be finite and the width 1 to 60 pixels")
    return Stroke(pairs, width, brushes[brush].channel)


def _view(requested: Any, shape: tuple[int, int]) -> tuple[Region, float]:
    """The view the browser asked for, checked; the whole image fitted to the canvas when none (or nonsense)."""
    fit = min(CANVAS_WIDTH / shape[1], CANVAS_HEIGHT / shape[0])
    try:
        top, left = int(requested["top"]), int(requested["left"])
        height, width, scale = int(requested["height"]), int(requested["width"]), float(requested["scale"])
    except (KeyError, TypeError, ValueError):
        return Region(0, 0, *shape), fit
    top, left = min(max(top, 0), shape[0] - 1), min(max(left, 0), shape[1] - 1)
    height, width = min(max(height, 1), shape[0] - top), min(max(width, 1), shape[1] - left)
    scale = scale if math.isfinite(scale) and scale > 0 else fit
    return Region(top, left, height, width), scale


def scribble_canvas(project: Project, name: str, brushes: list[Brush], user: str, overlay: Overlay,
                    goto: dict | None = None, marks: list[dict] | None = None) -> list[str]:
    """Show the canvas for one image and apply the edits it sends; returns messages about refused edits.

    Args:
        overlay: drawn over the image and the scribbles (uncertainty, outlines, suggestions).
        goto: ``{"top", "left", "height", "width", "nonce"}``: show this rectangle (a new nonce moves the view).
        marks: ``{"top", "left", "size", "label"}`` squares framed and labelled on the canvas (suggested regions).
    """
    key = f"scribbler-{project.dir.name}-{name}"
    state = st.session_state.get(key) or {}
    applied = st.session_state.setdefault(ACKED_KEY, set())
    handled, problems = apply_edits(project, name, state.get("ops") or [], brushes, user, applied)
    shape = project.image_shape(name)
    tile, resolution = tile_for_view(shape, *_view(state.get("view"), shape), MAX_TILE_SIDE)
    size = tile_size(tile, resolution)
    overview = Region(0, 0, *shape)
    overview_size = tile_size(overview, min(1.0, OVERVIEW_SIDE / max(shape)))
    brush_fields = tuple(brushes)
    data = {
        "image": {"height": shape[0], "width": shape[1]},
        "canvas": {"height": CANVAS_HEIGHT, "width": CANVAS_WIDTH},
        "max_tile_side": MAX_TILE_SIDE,
        "channels": [{"name": channel, "color": color} for channel, color in zip(project.channels, project.colors,
                                                                                   strict=True)],
        "display_key": f"impartial-display:{project.dir.name}:{':'.join(project.channels)}",
        "brushes": [{"label": brush.label, "color": brush.color, "key": brush.key, "eraser": brush.channel is None}
                    for brush in brushes],
        "tile": {"top": tile.top, "left": tile.left, "height": tile.height, "width": tile.width,
                 "resolution": resolution, "channels": channel_pictures(project, name, tile, size),
                 "scribbles": _scribble_picture(str(project.dir), name, project.scribbles_stamp(name), brush_fields,
                                                tile, size),
                 "overlay": None if overlay.empty else png_url(overlay_layer(overlay, tile, size))},
        "overview": {"channels": channel_pictures(project, name, overview, overview_size)},
        "acked": handled,
        "history": list(project.history(name).count(user)),
        "goto": goto,
        "marks": marks or [],
    }
    _scribbler(key=key, data=data, default={"ops": [], "view": None}, on_ops_change=lambda: None,
               on_view_change=lambda: None, width="content")
    return problems
