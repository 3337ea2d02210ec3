"""Pictures for the pages: channel composites, overlays, heat maps. Pure numpy / plotly, no widgets."""

from __future__ import annotations

import functools
import io

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from PIL import Image
from plotly.colors import sample_colorscale
from skimage.segmentation import find_boundaries

MAX_HEATMAP_SIDE = 512  # plotly heat maps are downsampled to this side so the browser stays responsive
MAX_PICTURE_SIDE = 1024  # pictures on the pages: finer than a page column shows, small enough to send to many sessions
LEGEND_GAP, LEGEND_HEIGHT = 6, 14  # px between a heat-map picture and its colour bar; the bar's height


def hex_to_rgb(color: str) -> np.ndarray:
    """``#rrggbb`` -> (3,) float32 in [0, 1]."""
    value = color.lstrip("#")
    return np.array([int(value[index:index + 2], 16) for index in (0, 2, 4)], np.float32) / 255.0


def composite(image: np.ndarray, colors: list[str], contrast: list[list[float]],
              gammas: list[float] | None = None) -> np.ndarray:
    """Additive colour composite of a multi-channel image.

    Args:
        image: (C, H, W) float32, normalised per channel.
        colors: one ``#rrggbb`` per channel (``#000000`` hides a channel).
        contrast: one ``[low, high]`` percentile pair per channel; intensities between them are stretched to [0, 1].
        gammas: one exponent per channel applied to the stretched intensities (below 1 brightens faint signal);
            None = 1 for all.

    Returns:
        (H, W, 3) uint8.
    """
    gammas = [1.0] * len(image) if gammas is None else gammas
    rgb = np.zeros((*image.shape[1:], 3), np.float32)
    for channel, color, (low, high), gamma in zip(image, colors, contrast, gammas, strict=True):
        if color.lower() == "#000000":
            continue
        lo, hi = np.percentile(channel, [low, high])
        stretched = np.clip((channel - lo) / max(float(hi - lo), 1e-6), 0.0, 1.0) ** gamma
        rgb += stretched[..., None] * hex_to_rgb(color)
    return to_uint8(rgb)


def to_uint8(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (clipped) -> uint8 [0, 255]."""
    return np.round(np.clip(values, 0.0, 1.0) * 255).astype(np.uint8)


def tint(rgb: np.ndarray, mask: np.ndarray, color: str, opacity: float) -> np.ndarray:
    """Blend ``color`` over the (H, W) bool ``mask`` pixels of an (H, W, 3) uint8 image; returns a new image."""
    out = rgb.astype(np.float32) / 255.0
    out[mask] = (1.0 - opacity) * out[mask] + opacity * hex_to_rgb(color)
    return to_uint8(out)


def outline(rgb: np.ndarray, labels: np.ndarray, color: str = "#ffff00", opacity: float = 1.0) -> np.ndarray:
    """Draw the inner boundary of every instance of ``labels`` (H, W) int over ``rgb`` (H, W, 3) uint8."""
    return tint(rgb, find_boundaries(labels, mode="inner"), color, opacity)


@functools.lru_cache(maxsize=4)
def _lookup_table(colorscale: str) -> np.ndarray:
    """(256, 3) uint8 colours sampled from a plotly colour scale."""
    samples = sample_colorscale(colorscale, np.linspace(0.0, 1.0, 256), colortype="tuple")
    return to_uint8(np.array(samples, np.float32))


def colormap(values: np.ndarray, vmax: float = 1.0, colorscale: str = "Inferno") -> np.ndarray:
    """(H, W) values in [0, vmax] -> (H, W, 3) uint8 colours of ``colorscale``."""
    index = np.clip(values / max(vmax, 1e-12), 0.0, 1.0) * 255
    return _lookup_table(colorscale)[index.astype(np.uint8)]


def png_bytes(picture: np.ndarray) -> bytes:
    """A uint8 picture, (H, W) grey or (H, W, 3/4) colour, as PNG bytes (fast compression: sent, not stored)."""
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def colour_bar(colorscale: str = "Inferno", height: int = 12, width: int = 256) -> np.ndarray:
    """(height, width, 3) uint8 picture of a colour map from its low end (left) to its high end (right), for a
    legend."""
    return colormap(np.linspace(0.0, 1.0, width)[None].repeat(height, axis=0), colorscale=colorscale)


def heat_picture(values: np.ndarray, vmax: float, colorscale: str) -> np.ndarray:
    """An (H, W) map in [0, ``vmax``] as an (h, w, 3) uint8 picture with its colour bar (0 left, ``vmax`` right)
    below it on black; subsampled to at most ``MAX_PICTURE_SIDE`` per side (every k-th pixel).

    A picture draws in a fraction of the time a plotly heat map takes in the browser, which matters when many
    sessions open the Results page at once.
    """
    step = picture_step(values.shape)
    picture = colormap(values[::step, ::step], vmax, colorscale)
    legend = colour_bar(colorscale, LEGEND_HEIGHT, picture.shape[1])
    gap = np.zeros((LEGEND_GAP, picture.shape[1], 3), np.uint8)
    return np.concatenate([picture, gap, legend])


def picture_step(shape: tuple[int, ...], side: int | None = None) -> int:
    """The subsampling step (every k-th pixel) that brings an image of ``shape`` (H, W, ...) to at most ``side``
    pixels per side (``MAX_PICTURE_SIDE`` when None)."""
    return max(1, int(np.ceil(max(shape[:2]) / (MAX_PICTURE_SIDE if side is None else side))))


def blend(rgb: np.ndarray, overlay: np.ndarray, opacity: float) -> np.ndarray:
    """Mix two (H, W, 3) uint8 images: ``opacity`` of ``overlay`` over ``rgb``."""
    mixed = (1.0 - opacity) * rgb.astype(np.float32) + opacity * overlay.astype(np.float32)
    return np.round(mixed).astype(np.uint8)


def heatmap(values: np.ndarray, title: str, zmax: float | None = None, colorscale: str = "Viridis") -> go.Figure:
    """A zoomable plotly heat map of an (H, W) map, pixels square, row 0 at the top.

    Large maps are subsampled to at most ``MAX_HEATMAP_SIDE`` per side (every k-th pixel).
    """
    step = picture_step(values.shape, MAX_HEATMAP_SIDE)
    shown = values[::step, ::step]
    rows, cols = np.arange(shown.shape[0]) * step, np.arange(shown.shape[1]) * step
    figure = go.Figure(go.Heatmap(z=shown, x=cols, y=rows, zmin=0.0, zmax=zmax, colorscale=colorscale))
    figure.update_layout(title=title, margin={"l": 10, "r": 10, "t": 40, "b": 10}, height=380)
    figure.update_yaxes(autorange="reversed", scaleanchor="x", constrain="domain")
    figure.update_xaxes(constrain="domain")
    return figure


def loss_figure(history: pd.DataFrame, columns: list[str]) -> go.Figure:
    """Loss curves (one line per column of the ``history`` DataFrame) over epochs."""
    figure = go.Figure()
    for column in columns:
        if column in history and history[column].notna().any():
            figure.add_trace(go.Scatter(x=history["epoch"], y=history[column], mode="lines+markers", name=column))
    figure.update_layout(xaxis_title="epoch", yaxis_title="loss", height=300,
                         legend={"orientation": "h", "yanchor": "bottom", "y": 1.02},
                         margin={"l": 10, "r": 10, "t": 30, "b": 10})
    return figure
