"""Synthetic 2-channel tissue with exact ground truth: the dashboard's demo data and the tests' data.

Cells are regions of a power diagram (a Voronoi diagram weighted by each cell's radius) drawn on
smoothly warped coordinates, clipped to a disc around each seed. Neighbouring seeds are closer than
the sum of their radii, so most cells touch; seed sites left empty leave background gaps. Each
cell holds an elliptical nucleus; a fraction of cells are nucleus only (e.g. lymphocytes).

The image has a membrane / cytoplasm channel (bright rims, weaker fill) and a nuclear channel,
with per-cell brightness, uneven illumination, blur and Poisson + Gaussian noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree
from skimage.measure import label as connected_pieces
from skimage.segmentation import find_boundaries, relabel_sequential

from .config import RunConfig
from .errors import InputError

MIN_CELL_AREA = 20  # px; smaller slivers (cut by the image border or squeezed out) are dropped
PHOTONS = 300.0  # photon count of intensity 1.0: sets the Poisson noise level


@dataclass
class SyntheticTissue:
    """One synthetic image with its ground truth.

    Attributes:
        image: (2, H, W) float32, channel 0 membrane / cytoplasm marker, channel 1 nuclear marker.
        cells: (H, W) int32 whole-cell instances, 0 = background, ids from 1.
        nuclei: (H, W) int32 nuclei; a nucleus has the id of its cell and lies inside it.
        cytoplasm: (H, W) int32 cell minus nucleus, with the cell's id.
        nucleus_in: (H, W) int32 nuclei of cells that have cytoplasm.
        nucleus_out: (H, W) int32 nuclei of nucleus-only cells (there the cell equals its nucleus).
    """

    image: np.ndarray
    cells: np.ndarray
    nuclei: np.ndarray
    cytoplasm: np.ndarray
    nucleus_in: np.ndarray
    nucleus_out: np.ndarray


def make_tissue(height: int = 256, width: int = 256, seed: int = 0, cell_radius: tuple[float, float] = (7, 14),
                density: float = 0.9, nuclei_only_fraction: float = 0.15, noise: float = 0.03,
                illumination: float = 0.3, blur: float = 1.0, warp: float = 2.5, rim_width: float = 1.2,
                cytoplasm_fill: float = 0.3) -> SyntheticTissue:
    """Draw one synthetic tissue image, deterministic for ``seed``.

    Args:
        height, width: image size in px.
        seed: seeds ``np.random.default_rng``.
        cell_radius: (smallest, largest) cell radius in px.
        density: share of seed sites that hold a cell; the empty ones leave background gaps.
        nuclei_only_fraction: share of cells that are a nucleus only.
        noise: standard deviation of the Gaussian read noise (signal is about 0..1).
        illumination: amplitude of the smooth gain field (0 = even illumination).
        blur: sigma in px of the optical blur.
        warp: amplitude in px of the smooth coordinate warp that makes shapes irregular.
        rim_width: px over which the membrane marker decays inward from a cell's rim.
        cytoplasm_fill: membrane-marker level of the cytoplasm relative to the rim (0 = rims only).

    Returns:
        A :class:`SyntheticTissue`.
    """
    if height < 8 or width < 8:
        raise InputError(f"synthetic images need at least 8 x 8 px, got {height} x {width}")
    if not 0 < cell_radius[0] <= cell_radius[1]:
        raise InputError(f"cell_radius must be (smallest, largest) with 0 < smallest <= largest, got {cell_radius}")
    if not 0 < density <= 1 or not 0 <= nuclei_only_fraction <= 1:
        raise InputError("density must be in (0, 1] and nuclei_only_fraction in [0, 1]")
    rng = np.random.default_rng(seed)
    shape = (height, width)
    points, radii = _seed_points(rng, shape, cell_radius, density)
    cells = _power_cells(points, radii, _warped_coordinates(rng, shape, warp), shape)
    cells = _drop_fragments(cells)
    # Only cells large enough to keep a sizeable nucleus may become nucleus-only.
    nucleus_only = (rng.random(cells.max() + 1) < nuclei_only_fraction) & (np.bincount(cells.ravel()) >= 60)
    nucleus_only[0] = False
    nuclei = _nuclei(rng, cells, nucleus_only)
    cells[nucleus_only[cells] & (nuclei != cells)] = 0  # a nucleus-only cell shrinks to its nucleus
    nucleus_out = np.where(nucleus_only[cells], nuclei, 0)
    # Nucleus-only cells with an empty nucleus vanished: renumber every map the same way.
    renumber = np.zeros(len(nucleus_only), np.int32)
    present = np.unique(cells)
    renumber[present] = np.arange(len(present))
    cells, nuclei, nucleus_out = renumber[cells], renumber[nuclei], renumber[nucleus_out]
    return SyntheticTissue(
        image=_render(rng, cells, nuclei, noise, illumination, blur, rim_width, cytoplasm_fill),
        cells=cells,
        nuclei=nuclei,
        cytoplasm=np.where(nuclei > 0, 0, cells).astype(np.int32),
        nucleus_in=np.where(nucleus_out > 0, 0, nuclei).astype(np.int32),
        nucleus_out=nucleus_out,
    )


def make_dataset(n_images: int, size: int = 256, seed: int = 0) -> list[SyntheticTissue]:
    """``n_images`` square tissues of ``size`` px; image i uses seed ``seed + i`` (as the demo does)."""
    return [make_tissue(size, size, seed=seed + index) for index in range(n_images)]


def class_labels(tissue: SyntheticTissue, config: RunConfig) -> list[list[np.ndarray]]:
    """Ground-truth instance map for every class of every task of ``config``: ``result[t][c]`` (H, W) int32.

    ``cytoplasm`` is the whole body of the cells that have cytoplasm (as in the Vectra labels), so
    it excludes nucleus-only cells. Unknown class names raise InputError.
    """
    maps = {
        "cell": tissue.cells,
        "nucleus": tissue.nuclei,
        "cytoplasm": np.where(tissue.nucleus_out > 0, 0, tissue.cells).astype(np.int32),
        "nucleus_in_cytoplasm": tissue.nucleus_in,
        "nucleus_out_of_cytoplasm": tissue.nucleus_out,
    }
    unknown = [name for name in config.class_names if name not in maps]
    if unknown:
        raise InputError(f"synthetic tissue has no ground truth for class(es) {unknown} "
                         f"(known: {', '.join(maps)})")
    return [[maps[name] for name in task.classes] for task in config.tasks]


# --- geometry ------------------------------------------------------------------------------------

def _seed_points(rng: np.random.Generator, shape: tuple[int, int], cell_radius: tuple[float, float],
                 density: float) -> tuple[np.ndarray, np.ndarray]:
    """Jittered hexagonal grid of seeds (Poisson-disc-like spacing) covering the image plus a margin.

    Returns (points (N, 2) float64 (row, col), radii (N,) float64).
    """
    mean_radius = float(np.mean(cell_radius))
    spacing = 1.8 * mean_radius  # below 2 x radius: neighbouring discs overlap, so cells touch
    row_step = spacing * np.sqrt(3) / 2
    rows = np.arange(-spacing, shape[0] + spacing, row_step)
    cols = np.arange(-spacing, shape[1] + spacing, spacing)
    grid_r, grid_c = np.meshgrid(rows, cols, indexing="ij")
    grid_c = grid_c + (np.arange(len(rows))[:, None] % 2) * spacing / 2  # offset every other row: hexagonal
    points = np.stack([grid_r.ravel(), grid_c.ravel()], axis=1)
    points += rng.uniform(-0.3, 0.3, points.shape) * spacing
    points = points[rng.random(len(points)) < density]
    return points, rng.uniform(cell_radius[0], cell_radius[1], len(points))


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """(H, W) float64 smooth random field with zero mean and unit standard deviation."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return (field - field.mean()) / max(field.std(), 1e-12)


def _warped_coordinates(rng: np.random.Generator, shape: tuple[int, int], amplitude: float) -> np.ndarray:
    """(H*W, 2) pixel coordinates displaced by a smooth field; gentle enough to keep regions connected."""
    rows, cols = np.indices(shape, dtype=np.float64)
    rows += amplitude * _smooth_field(rng, shape, 6.0)
    cols += amplitude * _smooth_field(rng, shape, 6.0)
    return np.stack([rows.ravel(), cols.ravel()], axis=1)


def _power_cells(points: np.ndarray, radii: np.ndarray, coords: np.ndarray, shape: tuple[int, int],
                 candidates: int = 8) -> np.ndarray:
    """Power-diagram labels of ``coords`` clipped to each seed's disc.

    A pixel belongs to the seed minimising ``distance**2 - radius**2`` (power cells are convex, hence
    connected) among its ``candidates`` nearest seeds, if it lies within that seed's radius.
    Returns (H, W) int32 with seed i labelled i + 1.
    """
    distance, index = cKDTree(points).query(coords, k=min(candidates, len(points)))
    distance, index = distance.reshape(len(coords), -1), index.reshape(len(coords), -1)
    best = np.argmin(distance ** 2 - radii[index] ** 2, axis=1)
    rows = np.arange(len(coords))
    owner = index[rows, best]
    inside = distance[rows, best] <= radii[owner]
    return np.where(inside, owner + 1, 0).reshape(shape).astype(np.int32)


def _drop_fragments(labels: np.ndarray) -> np.ndarray:
    """Keep the largest connected piece of every label and drop labels under MIN_CELL_AREA px.

    Returns (H, W) int32, ids renumbered from 1.
    """
    piece_ids = connected_pieces(labels, background=0, connectivity=1)  # touching cells stay separate pieces
    sizes = np.bincount(piece_ids.ravel())
    piece_label = np.zeros(len(sizes), np.int64)
    piece_label[piece_ids.ravel()] = labels.ravel()
    order = np.lexsort((-sizes, piece_label))  # by label, largest piece first
    first = np.ones(len(order), bool)
    first[1:] = piece_label[order][1:] != piece_label[order][:-1]
    keep = np.zeros(len(sizes), bool)
    keep[order[first]] = True
    keep &= (sizes >= MIN_CELL_AREA) & (piece_label > 0)
    kept = np.where(keep[piece_ids], labels, 0)
    return relabel_sequential(kept)[0].astype(np.int32)


def _nuclei(rng: np.random.Generator, cells: np.ndarray, nucleus_only: np.ndarray) -> np.ndarray:
    """(H, W) int32 elliptical nuclei at the cell centroids, inside each cell at least 2 px from its border.

    ``nucleus_only`` (n_cells + 1,) bool marks cells whose nucleus fills most of the cell.
    """
    n_cells = int(cells.max())
    area = np.bincount(cells.ravel(), minlength=n_cells + 1).astype(np.float64)
    rows, cols = np.indices(cells.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        centre_r = np.bincount(cells.ravel(), rows.ravel(), n_cells + 1) / area
        centre_c = np.bincount(cells.ravel(), cols.ravel(), n_cells + 1) / area
    # Nucleus-only cells (lymphocyte-like) get a large, nearly round nucleus.
    scale = np.where(nucleus_only, 0.85, rng.uniform(0.5, 0.65, n_cells + 1))
    major = scale * np.sqrt(area / np.pi)
    minor = major * np.where(nucleus_only, rng.uniform(0.85, 1.0, n_cells + 1), rng.uniform(0.65, 1.0, n_cells + 1))
    angle = rng.uniform(0, np.pi, n_cells + 1)
    dr, dc = rows - centre_r[cells], cols - centre_c[cells]
    cos, sin = np.cos(angle)[cells], np.sin(angle)[cells]
    with np.errstate(invalid="ignore", divide="ignore"):
        ellipse = ((dr * cos + dc * sin) / major[cells]) ** 2 + ((dc * cos - dr * sin) / minor[cells]) ** 2 <= 1
    depth = ndimage.distance_transform_edt(~find_boundaries(cells, mode="inner") & (cells > 0))
    return np.where(ellipse & (depth >= 2) & (cells > 0), cells, 0).astype(np.int32)


# --- rendering -----------------------------------------------------------------------------------

def _render(rng: np.random.Generator, cells: np.ndarray, nuclei: np.ndarray, noise: float, illumination: float,
            blur: float, rim_width: float, cytoplasm_fill: float) -> np.ndarray:
    """(2, H, W) float32 image: membrane / cytoplasm marker and nuclear marker with realistic imperfections."""
    n_cells = int(cells.max())
    cell_brightness = np.r_[0.0, rng.uniform(0.5, 1.2, n_cells)]
    nucleus_brightness = np.r_[0.0, rng.uniform(0.5, 1.2, n_cells)]
    # Distance to the cell's own border (0 on it): the membrane marker decays away from the rim.
    depth = ndimage.distance_transform_edt(~find_boundaries(cells, mode="inner") & (cells > 0))
    rim = np.exp(-depth / rim_width)
    fill = np.where(nuclei > 0, 0.05, cytoplasm_fill)
    texture = 1.0 + 0.15 * _smooth_field(rng, cells.shape, 1.5)
    membrane = cell_brightness[cells] * (rim + fill) * texture
    nuclear = nucleus_brightness[nuclei] * (1.0 + 0.25 * _smooth_field(rng, cells.shape, 1.0))
    image = np.stack([membrane, nuclear]).clip(0, None)
    image = ndimage.gaussian_filter(image, (0, blur, blur))
    image = image * _gain_field(rng, cells.shape, illumination) + 0.03
    image = rng.poisson(image * PHOTONS) / PHOTONS + rng.normal(0.0, noise, image.shape)
    return image.clip(0, None).astype(np.float32)  # intensities are counts: never negative


def _gain_field(rng: np.random.Generator, shape: tuple[int, int], amplitude: float, waves: int = 3) -> np.ndarray:
    """(H, W) smooth illumination gain around 1: a few random plane waves longer than the image."""
    rows, cols = np.indices(shape, dtype=np.float64)
    gain = np.zeros(shape)
    for _ in range(waves):
        direction = rng.uniform(0, 2 * np.pi)
        wavelength = rng.uniform(1.5, 3.0) * max(shape)
        phase = rng.uniform(0, 2 * np.pi)
        gain += np.cos(2 * np.pi * (rows * np.sin(direction) + cols * np.cos(direction)) / wavelength + phase)
    return 1.0 + amplitude * gain / waves
