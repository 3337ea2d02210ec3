"""Scribbling, as numpy: brushes, the part of the image in view, and the pictures the canvas shows.

The canvas (dashboard/static/scribble_canvas.js) shows a *tile*: the part of the image in view plus a
margin, at no more pixels than the screen needs. It composites the channels itself (so channel controls
act at once) and sends strokes back as edits that :mod:`impartial.strokes` applies to the saved scribbles.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from skimage.segmentation import find_boundaries

from impartial.config import TaskConfig
from impartial.scribbles import count_pieces

from .render import colormap, hex_to_rgb, png_bytes

# Brush colours stay clear of the default channel colours (green, blue) so strokes stand out.
CLASS_COLORS = ("#ff3030", "#ff40ff", "#ff8000", "#9050ff", "#00d0a0", "#ff80b0")
BACKGROUND_COLORS = ("#ffe000", "#b0ff40", "#40ffe0")
ERASER_COLOR = "#808080"
ERASER_KEY = "e"


@dataclass(frozen=True)
class Brush:
    """One way to paint: a class of a task, a task's background, or the eraser (``task`` None)."""

    label: str
    color: str
    task: int | None
    channel: int | None  # index into the (H, W, S) scribble channels; None for the eraser
    key: str  # the keyboard key that picks it on the canvas


@dataclass(frozen=True)
class Region:
    """The part of the image on the canvas, in image pixels."""

    top: int
    left: int
    height: int
    width: int

    def slices(self) -> tuple[slice, slice]:
        return slice(self.top, self.top + self.height), slice(self.left, self.left + self.width)


def brushes_for(tasks: list[TaskConfig]) -> list[Brush]:
    """One brush per class, one background brush per task (named per task only when there are several), eraser."""
    brushes, backgrounds, offset = [], [], 0
    for index, task in enumerate(tasks):
        for number, name in enumerate(task.classes):
            color = CLASS_COLORS[len(brushes) % len(CLASS_COLORS)]
            brushes.append((name, color, index, offset + number))
        label = "background" if len(tasks) == 1 else f"background ({task.name})"
        backgrounds.append((label, BACKGROUND_COLORS[index % len(BACKGROUND_COLORS)], index, offset + task.n_classes))
        offset += task.n_scribble_channels
    painting = [Brush(*fields, key=str(number)) for number, fields in enumerate([*brushes, *backgrounds], start=1)]
    return [*painting, Brush("eraser", ERASER_COLOR, None, None, key=ERASER_KEY)]


def tile_for_view(shape: tuple[int, int], view: Region, scale: float, max_side: int,
                  margin: float = 0.15) -> tuple[Region, float]:
    """The tile to send for a view: the view plus ``margin`` of its size on each side (inside the image), and
    its resolution in tile pixels per image pixel: as sharp as the screen shows it (``scale`` screen pixels per
    image pixel, never above 1) with no side over ``max_side`` pixels."""
    height, width = shape
    pad_h, pad_w = round(view.height * margin), round(view.width * margin)
    top, left = max(0, view.top - pad_h), max(0, view.left - pad_w)
    bottom = min(height, view.top + view.height + pad_h)
    right = min(width, view.left + view.width + pad_w)
    tile = Region(top, left, max(1, bottom - top), max(1, right - left))
    resolution = min(1.0, scale, max_side / max(tile.height, tile.width))
    return tile, resolution


def tile_size(tile: Region, resolution: float) -> tuple[int, int]:
    """(height, width) in pixels of a tile at ``resolution``."""
    return max(1, round(tile.height * resolution)), max(1, round(tile.width * resolution))


def display_levels(image: np.ndarray, contrast: list[list[float]]) -> np.ndarray:
    """(C, H, W) float32 normalised image -> (C, H, W) uint8 grey levels, each channel stretched between its
    ``[low, high]`` percentiles (as :func:`dashboard.render.composite` does); the canvas colours them."""
    levels = np.empty(image.shape, np.uint8)
    for index, (channel, (low, high)) in enumerate(zip(image, contrast, strict=True)):
        lo, hi = np.percentile(channel, [low, high])
        levels[index] = np.round(np.clip((channel - lo) / max(float(hi - lo), 1e-6), 0.0, 1.0) * 255)
    return levels


def shrink(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A 2-D uint8 picture resized to ``size`` (height, width): area average when smaller, nearest when larger."""
    method = Image.Resampling.BOX if size[0] <= values.shape[0] else Image.Resampling.NEAREST
    return np.asarray(Image.fromarray(values).resize((size[1], size[0]), method))


def scribble_layer(scribbles: np.ndarray, brushes: list[Brush], size: tuple[int, int]) -> np.ndarray:
    """(h, w, 4) uint8 picture of (H, W, S) scribbles in brush colours, transparent elsewhere, at ``size``.

    A tile pixel shows a brush when any image pixel under it is scribbled, so thin strokes stay visible on a
    zoomed-out view; later brushes are drawn on top.
    """
    layer = np.zeros((*size, 4), np.uint8)
    for brush in brushes:
        if brush.channel is None:
            continue
        covered = shrink(scribbles[..., brush.channel].astype(np.uint8) * 255, size) > 0
        layer[covered] = [*np.round(hex_to_rgb(brush.color) * 255).astype(np.uint8), 255]
    return layer


@dataclass
class Overlay:
    """What can be drawn over the image and the scribbles, all (H, W) at image resolution (suggested regions are
    drawn by the canvas itself, see :func:`dashboard.canvas.scribble_canvas`)."""

    heat: np.ndarray | None = None  # in [0, 1] (entropy, a live probability): a colour map, half transparent
    outlines: list[tuple[np.ndarray, str]] = field(default_factory=list)  # (labels, colour): instance borders

    @property
    def empty(self) -> bool:
        return self.heat is None and not self.outlines


HEAT_OPACITY = 0.45


def overlay_layer(overlay: Overlay, tile: Region, size: tuple[int, int]) -> np.ndarray:
    """(h, w, 4) uint8 RGBA picture of an overlay over ``tile``, at ``size``."""
    layer = np.zeros((*size, 4), np.uint8)
    if overlay.heat is not None:
        levels = np.round(np.clip(overlay.heat[tile.slices()], 0.0, 1.0) * 255).astype(np.uint8)
        layer[..., :3] = colormap(shrink(levels, size).astype(np.float32) / 255.0)
        layer[..., 3] = round(HEAT_OPACITY * 255)
    for labels, color in overlay.outlines:
        mask = find_boundaries(labels[tile.slices()], mode="inner")
        covered = shrink(mask.astype(np.uint8) * 255, size) > 0
        layer[covered] = [*np.round(hex_to_rgb(color) * 255).astype(np.uint8), 255]
    return layer


def png_url(picture: np.ndarray) -> str:
    """A uint8 picture (H, W) grey or (H, W, 3/4) colour as a ``data:image/png`` URL."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(picture)).decode("ascii")


@dataclass(frozen=True)
class BrushCount:
    """What one brush has scribbled: separate strokes (connected pieces), pixels and, when the image has labels,
    the labelled cells its strokes touch."""

    strokes: int
    pixels: int
    cells: int | None = None


def scribble_counts(scribbles: np.ndarray, brushes: list[Brush],
                    labels: np.ndarray | None = None) -> dict[str, BrushCount]:
    """Strokes and pixels per brush (eraser left out; touching strokes of one brush count as one), and with the
    image's (H, W) ``labels`` the labelled cells under each brush's strokes."""
    counts = {}
    for brush in brushes:
        if brush.channel is None:
            continue
        stroked = scribbles[..., brush.channel] > 0
        cells = None if labels is None else int(np.count_nonzero(np.unique(labels[stroked])))
        counts[brush.label] = BrushCount(count_pieces(stroked), int(stroked.sum(dtype=np.int64)), cells)
    return counts
