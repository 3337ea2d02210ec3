"""Scribbling on the canvas, as numpy: brushes, the zoomed region, strokes -> (H, W, S) scribbles.

The canvas returns its strokes as an RGBA picture (``return_image_data=True``). Every brush draws
in its own opaque colour, so each stroke pixel is assigned to the brush of the nearest colour; the
topmost stroke wins where strokes overlap, exactly as the user sees it. Strokes are applied on top of
the scribbles saved when the canvas was opened ("base"), so undo on the canvas undoes in the file too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from impartial.config import TaskConfig

from .render import hex_to_rgb

# Brush colours stay clear of the default channel colours (green, blue) so strokes stand out.
CLASS_COLORS = ("#ff3030", "#ff40ff", "#ff8000", "#9050ff", "#00d0a0", "#ff80b0")
BACKGROUND_COLORS = ("#ffe000", "#b0ff40", "#40ffe0")
ERASER_COLOR = "#808080"
MIN_STROKE_ALPHA = 128  # canvas pixels less opaque than this are anti-aliased stroke edges: ignored
NO_BRUSH = 255


@dataclass(frozen=True)
class Brush:
    """One way to paint: a class of a task, a task's background, or the eraser (``task`` None)."""

    label: str
    color: str
    task: int | None
    channel: int | None  # index into the (H, W, S) scribble channels; None for the eraser


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
            brushes.append(Brush(name, color, index, offset + number))
        label = "background" if len(tasks) == 1 else f"background ({task.name})"
        backgrounds.append(Brush(label, BACKGROUND_COLORS[index % len(BACKGROUND_COLORS)], index,
                                 offset + task.n_classes))
        offset += task.n_scribble_channels
    return [*brushes, *backgrounds, Brush("eraser", ERASER_COLOR, None, None)]


def task_channels(tasks: list[TaskConfig]) -> list[slice]:
    """The slice of scribble channels that belongs to each task."""
    starts = np.cumsum([0] + [task.n_scribble_channels for task in tasks])
    return [slice(int(start), int(stop)) for start, stop in zip(starts[:-1], starts[1:], strict=True)]


def zoom_region(shape: tuple[int, int], zoom: float, center_y: float, center_x: float) -> Region:
    """The window of ``1/zoom`` of each side around a centre given as fractions (0..1) of the image.

    The window is kept inside the image.
    """
    height, width = shape
    region_h, region_w = max(1, round(height / zoom)), max(1, round(width / zoom))
    top = int(np.clip(round(center_y * height - region_h / 2), 0, height - region_h))
    left = int(np.clip(round(center_x * width - region_w / 2), 0, width - region_w))
    return Region(top, left, region_h, region_w)


def canvas_size(region: Region, max_side: int) -> tuple[int, int]:
    """(height, width) of the canvas showing ``region`` with its longer side at ``max_side`` pixels."""
    scale = max_side / max(region.height, region.width)
    return max(1, round(region.height * scale)), max(1, round(region.width * scale))


def stroke_brushes(rgba: np.ndarray, brushes: list[Brush]) -> np.ndarray:
    """Which brush painted each pixel of the canvas picture.

    Args:
        rgba: (h, w, 4) uint8, the strokes only (transparent elsewhere).
        brushes: the palette; colours must differ.

    Returns:
        (h, w) uint8 brush index, ``NO_BRUSH`` where nothing was painted.
    """
    palette = np.stack([hex_to_rgb(brush.color) for brush in brushes]) * 255.0  # (B, 3)
    painted = rgba[..., 3] >= MIN_STROKE_ALPHA
    colors = rgba[painted][:, :3].astype(np.float32)  # (N, 3)
    distances = ((colors[:, None, :] - palette[None]) ** 2).sum(axis=-1)  # (N, B)
    result = np.full(rgba.shape[:2], NO_BRUSH, np.uint8)
    result[painted] = np.argmin(distances, axis=1)
    return result


def resample_nearest(values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a 2-D array to ``shape``, sampling at pixel centres."""
    rows = ((np.arange(shape[0]) + 0.5) * values.shape[0] / shape[0]).astype(int)
    cols = ((np.arange(shape[1]) + 0.5) * values.shape[1] / shape[1]).astype(int)
    return values[np.ix_(rows, cols)]


def apply_strokes(base: np.ndarray, brush_map: np.ndarray, region: Region, brushes: list[Brush],
                  tasks: list[TaskConfig]) -> np.ndarray:
    """Scribbles after painting: ``base`` with the region's painted pixels overwritten.

    A class or background brush makes the pixel that class within its task (the task's other maps are
    cleared there, other tasks keep theirs); the eraser clears every map.

    Args:
        base: (H, W, S) uint8 scribbles before the strokes.
        brush_map: (h, w) uint8 from :func:`stroke_brushes`, any size: resampled onto the region.
        region: where the canvas sits in the image.

    Returns:
        (H, W, S) uint8, a new array.
    """
    scribbles = base.copy()
    window = scribbles[region.slices()]  # a view: writing to it writes to ``scribbles``
    painted = resample_nearest(brush_map, (region.height, region.width))
    channels = task_channels(tasks)
    for index, brush in enumerate(brushes):
        mask = painted == index
        if not mask.any():
            continue
        if brush.task is None:
            window[mask] = 0
            continue
        task_maps = window[:, :, channels[brush.task]]  # a view again
        task_maps[mask] = 0
        task_maps[mask, brush.channel - channels[brush.task].start] = 1
    return scribbles


def paint_scribbles(rgb: np.ndarray, scribbles: np.ndarray, brushes: list[Brush], opacity: float = 0.8) -> np.ndarray:
    """Show saved scribbles (H, W, S) in their brush colours over an (H, W, 3) uint8 picture."""
    out = rgb.astype(np.float32)
    for brush in brushes:
        if brush.channel is None:
            continue
        mask = scribbles[..., brush.channel] > 0
        out[mask] = (1.0 - opacity) * out[mask] + opacity * hex_to_rgb(brush.color) * 255.0
    return np.round(out).astype(np.uint8)


def uncertain_tiles(entropy: np.ndarray, tile: int, count: int) -> list[tuple[int, int, float]]:
    """The ``count`` square tiles of side ``tile`` with the highest mean entropy: where to scribble next.

    Partial tiles at the right and bottom edges are left out. Returns (top, left, mean entropy), highest first.
    """
    rows, cols = entropy.shape[0] // tile, entropy.shape[1] // tile
    if rows == 0 or cols == 0:
        return []
    means = entropy[:rows * tile, :cols * tile].reshape(rows, tile, cols, tile).mean(axis=(1, 3))
    order = np.argsort(means, axis=None)[::-1][:count]
    return [(int(index // cols) * tile, int(index % cols) * tile, float(means.flat[index])) for index in order]


def tile_frames(shape: tuple[int, int], tiles: list[tuple[int, int, float]], tile: int,
                thickness: int = 2) -> np.ndarray:
    """(H, W) bool mask of the frames of square tiles given as (top, left, ...) tuples."""
    mask = np.zeros(shape, bool)
    for top, left, *_ in tiles:
        mask[top:top + tile, left:left + tile] = True
        mask[top + thickness:top + tile - thickness, left + thickness:left + tile - thickness] = False
    return mask


def scribble_counts(scribbles: np.ndarray, brushes: list[Brush]) -> dict[str, int]:
    """Scribbled pixels per brush (eraser left out)."""
    totals = scribbles.reshape(-1, scribbles.shape[-1]).sum(axis=0, dtype=np.int64)
    return {brush.label: int(totals[brush.channel]) for brush in brushes if brush.channel is not None}
