"""Automatic strokes from the stains: what the image itself says about cells, for runs with few scribbles.

Ten strokes cannot teach a network what a cell looks like on the next image: on Vectra tissue such a run found
foreground little better than chance (Dice 0.52), while an Otsu threshold of the stains alone outlines the cells
with a Dice of 0.89. So training adds automatic strokes where the stains are unambiguous:

- *cell*: brighter than its Otsu level in the nuclear stain, or in a stain that fills cells (cytoplasm, whole
  cell). A membrane stain is left out: it is brightest exactly where touching cells meet, and strokes there teach
  the network that the borders the instance step needs are cell. A stain counts as filling when its bright regions
  are thicker than the nuclei's (``FILLING_RATIO``): a cytoplasm surrounds its nucleus, a membrane is a thin line.
- *background*: well below the Otsu level in every stain.

A random share of those pixels is drawn, more than ``USER_REACH`` px from the user's own strokes and outside the
held-out validation box, on images with fewer than ``ENOUGH_CELL_STROKES`` cell strokes: where the user drew, the
user's strokes speak (on the densely scribbled demo, automatic strokes among them cost 0.03 F1), and the run's
thresholds are still chosen on the user's strokes alone.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu

from .config import RunConfig
from .scribbles import class_channel_pairs, count_pieces

# The class that automatic strokes mark: whole cells only (a stain cannot tell cytoplasm from nucleus).
STAIN_CLASS = "cell"
SMOOTHING_SIGMA = 1.5  # px: the Otsu levels and the masks see the stains lightly smoothed (shot noise)
CELL_EROSION = 2  # px kept from a cell mask's edge, where the stains fade into the background
# background: below this share of the way from a stain's darkest (1st percentile) value to its Otsu level in
# every stain; on the demo tissue a level of 1 put 17 % of these pixels in cells, 0.5 none (Vectra: 6 %, none)
BACKGROUND_DEPTH = 0.5
BACKGROUND_EROSION = 4  # px kept from the cells: the faint rim of a cell is not background
# A stain fills cells when the 90th percentile of its bright pixels' distance to the dark is this many times the
# nuclear stain's. Measured: Vectra's cytoplasm stain 1.46-2.11 (three images), the demo's membrane stain 0.87-0.97.
FILLING_RATIO = 1.2
THICKNESS_PERCENTILE = 90
USER_REACH = 16  # px: no automatic strokes this close to the user's strokes
# An image with this many cell strokes has shown its cells: no automatic strokes. Measured with the strokes on:
# the demo (47-51 cell strokes per image) 0.924 F1 over 3 seeds against 0.955 without; Vectra image0 scribbled
# on 20 % of its cells (59) recall 0.202 against 0.231; with 26 (image1) and 10 strokes they help (README).
ENOUGH_CELL_STROKES = 40


def stain_channels(config: RunConfig) -> list[int]:
    """The channels whose brightness marks cells: the instance step's membrane and nuclear channels when set,
    else every channel."""
    named = {config.instances.membrane_channel, config.instances.nuclear_channel} - {None}
    chosen = sorted(channel for channel in named if channel < config.n_channels)
    return chosen or list(range(config.n_channels))


def bright_thickness(bright: np.ndarray) -> float:
    """How thick the (H, W) bool ``bright`` regions are: a high percentile of their pixels' distance to the dark
    (px); 0 when nothing is bright."""
    if not bright.any():
        return 0.0
    return float(np.percentile(ndi.distance_transform_edt(bright)[bright], THICKNESS_PERCENTILE))


def confident_stains(image: np.ndarray, channels: list[int],
                     nuclear_channel: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(cell, background) (H, W) bool masks of the (C, H, W) ``image``, each shrunk away from its edges.

    Cell: above the Otsu level (of the smoothed channel) of ``nuclear_channel`` or of a channel of ``channels``
    that fills cells; every channel of ``channels`` counts when ``nuclear_channel`` is None or blank.
    Background: well below the level in every channel of ``channels`` (see ``BACKGROUND_DEPTH``).
    """
    brights, background = {}, np.ones(image.shape[1:], bool)
    for channel in sorted({*channels, *([] if nuclear_channel is None else [nuclear_channel])}):
        smoothed = smoothed_stain(image[channel])
        if smoothed.min() == smoothed.max():
            continue  # a blank channel says nothing
        level = threshold_otsu(smoothed)
        brights[channel] = smoothed > level
        if channel in channels:
            darkest = np.percentile(smoothed, 1)
            # dim cytoplasm can lie just below the Otsu level: background only well below it
            background &= smoothed < darkest + BACKGROUND_DEPTH * (level - darkest)
    cell = np.zeros(image.shape[1:], bool)
    nuclei = brights.get(nuclear_channel)
    for channel, bright in brights.items():
        if nuclei is None or channel == nuclear_channel or (channel in channels and _thicker(bright, nuclei)):
            cell |= bright
    if not cell.any():
        return cell, np.zeros_like(background)
    # (the image's edge is no edge of a mask: border_value 1)
    return (ndi.binary_erosion(cell, iterations=CELL_EROSION, border_value=1),
            ndi.binary_erosion(background, iterations=BACKGROUND_EROSION, border_value=1))


def fills_cells(image: np.ndarray, channel: int, nuclear_channel: int) -> bool:
    """Whether the stain in ``channel`` of the (C, H, W) ``image`` fills cells (cytoplasm, whole cell) rather than
    outlining them (membrane): its bright regions are more than ``FILLING_RATIO`` times as thick as those of the
    nuclear stain. False when either channel is blank."""
    brights = []
    for smoothed in (smoothed_stain(image[index]) for index in (channel, nuclear_channel)):
        if smoothed.min() == smoothed.max():
            return False
        brights.append(smoothed > threshold_otsu(smoothed))
    return _thicker(*brights)


def _thicker(bright: np.ndarray, nuclei: np.ndarray) -> bool:
    return bright_thickness(bright) > FILLING_RATIO * bright_thickness(nuclei)


def smoothed_stain(channel: np.ndarray) -> np.ndarray:
    """(H, W) float32: the channel as the stain tests see it, lightly smoothed (``SMOOTHING_SIGMA``)."""
    return ndi.gaussian_filter(channel.astype(np.float32), SMOOTHING_SIGMA)


def run_stain_masks(image: np.ndarray, config: RunConfig) -> tuple[np.ndarray, np.ndarray]:
    """:func:`confident_stains` of a (C, H, W) image with the run's channels (:func:`stain_channels`)."""
    nuclear = config.instances.nuclear_channel
    return confident_stains(image, stain_channels(config),
                            nuclear if nuclear is not None and nuclear < config.n_channels else None)


def with_stain_strokes(scribbles: np.ndarray, image: np.ndarray, val_mask: np.ndarray | None, config: RunConfig,
                       rng: np.random.Generator,
                       masks: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None) -> np.ndarray:
    """``scribbles`` (H, W, S) plus automatic strokes (a ``config.train.stain_strokes`` share of the confident
    pixels) for every task with a ``"cell"`` class whose cell strokes are fewer than ``ENOUGH_CELL_STROKES``, more
    than ``USER_REACH`` px from the user's strokes and outside ``val_mask``. ``masks``: gives the image's
    :func:`run_stain_masks` (a second of work on 2048 x 2048) when the caller keeps them; called only when strokes
    are added. Returns a new array; ``scribbles`` is unchanged, and returned as is when none are added."""
    if config.train.stain_strokes <= 0:
        return scribbles
    # an image whose cells the user has shown (enough cell strokes) gets none for that task
    pairs = [(channel, background_channel) for channel, background_channel in class_channel_pairs(config, STAIN_CLASS)
             if count_pieces(scribbles[..., channel] > 0) < ENOUGH_CELL_STROKES]
    if not pairs:
        return scribbles
    cell, background = masks() if masks is not None else run_stain_masks(image, config)
    # where the user drew, the user's strokes speak: the stains only fill the image's unscribbled parts
    far = ndi.distance_transform_edt(~scribbles.any(axis=-1)) > USER_REACH
    free = far & (rng.random(cell.shape) < config.train.stain_strokes)
    if val_mask is not None:
        free &= ~val_mask
    result = scribbles.copy()
    for channel, background_channel in pairs:
        result[..., channel][cell & free] = 1
        result[..., background_channel][background & free] = 1
    return result
