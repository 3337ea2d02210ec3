"""Training data on the fly: patch sampling around scribbles and Noise2Void-style blind spots."""

from __future__ import annotations

import numpy as np
import torch

from .errors import InputError

# --- blind spots ---------------------------------------------------------------------------------

def blind_spots(x: torch.Tensor, ratio: float, radius: int,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace a random share of each channel's pixels by a random neighbour's value.

    In every sample and channel independently, ``round((1 - ratio) * H * W)`` distinct pixels are chosen.
    Each takes the clean value at offset ``(dy, dx)`` drawn uniformly from ``[-radius, radius - 1]**2`` without
    ``(0, 0)``. An offset that leaves the patch along an axis is mirrored on that axis (``-dy``), so the source
    stays inside the patch and is never the pixel itself.

    Args:
        x: (B, C, H, W) clean patches; H and W must exceed ``2 * radius``.
        ratio: share of pixels kept, e.g. 0.95.
        radius: offsets lie in ``[-radius, radius - 1]`` (radius 5 = the method's 10 x 10 window).
        generator: torch random source; its device is used for the draws, the results go to ``x.device``.

    Returns:
        (corrupted (B, C, H, W) same dtype as x, mask (B, C, H, W) bool, True at the replaced pixels).
    """
    batch, channels, height, width = x.shape
    if radius < 1 or min(height, width) <= 2 * radius:
        raise InputError(f"blind-spot radius {radius} needs patches larger than {2 * radius} px, "
                         f"got {height}x{width}")
    n_blind = round((1.0 - ratio) * height * width)
    draw_device = generator.device if generator is not None else x.device
    scores = torch.rand(batch, channels, height * width, generator=generator, device=draw_device)
    targets = scores.topk(n_blind, dim=2).indices  # distinct pixels: sampling without replacement
    dy, dx = _neighbour_offsets(targets.shape, radius, generator, draw_device)
    target_y, target_x = targets // width, targets % width
    source_y = _mirror_into_range(target_y, dy, height)
    source_x = _mirror_into_range(target_x, dx, width)
    targets = targets.to(x.device)
    sources = (source_y * width + source_x).to(x.device)

    flat = x.reshape(batch, channels, height * width)
    corrupted = flat.scatter(2, targets, flat.gather(2, sources))
    mask = torch.zeros_like(flat, dtype=torch.bool).scatter_(2, targets, True)
    return corrupted.view_as(x), mask.view_as(x)


def _neighbour_offsets(shape: torch.Size, radius: int, generator: torch.Generator | None,
                       device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Offsets uniform over ``[-radius, radius - 1]**2`` minus ``(0, 0)``: (dy, dx) int64 of ``shape``."""
    side = 2 * radius
    # Number the side*side offsets row by row, draw among all but one, and skip the zero offset's number.
    zero_offset = radius * side + radius
    code = torch.randint(0, side * side - 1, shape, generator=generator, device=device)
    code = code + (code >= zero_offset)
    return code // side - radius, code % side - radius


def _mirror_into_range(position: torch.Tensor, offset: torch.Tensor, size: int) -> torch.Tensor:
    """``position + offset``, or ``position - offset`` where the former falls outside ``[0, size)``."""
    moved = position + offset
    outside = (moved < 0) | (moved >= size)
    return torch.where(outside, position - offset, moved)


# --- patch sampling ------------------------------------------------------------------------------

class PatchSampler:
    """Draws square training or validation patches, with their scribbles, from a set of images.

    Region ``"train"``: patch centres lie outside each image's validation box; ``scribble_fraction`` of them
    are scribbled pixels moved by up to ``jitter`` px, the rest uniform; patches get random flips and 90-degree
    rotations; scribbles inside the validation box are removed. Region ``"val"``: centres are scribbled pixels
    (or, for the non-scribble share, uniform pixels) inside the box, no augmentation, and only the box's
    scribbles are kept. Images smaller than the patch are reflect-padded (scribbles and box with zeros).

    Args:
        images: per image (C, H, W) float32.
        scribbles: per image (H, W, S) 0/1 in the method's layout.
        val_masks: per image (H, W) bool validation box, or None (no validation pixels).
        patch: side P of the square patches.
        scribble_fraction: share of centres drawn on scribbled pixels.
        jitter: largest shift (px) of a scribble centre, per axis (training only).
        region: ``"train"`` or ``"val"``.
        rng: numpy random source.
        intensity: training patches have each channel multiplied by ``exp(u)``, u uniform in
            ``[-intensity, intensity]``, so the model does not learn one image's exact stain levels.
    """

    def __init__(self, images: list[np.ndarray], scribbles: list[np.ndarray], val_masks: list[np.ndarray | None],
                 patch: int, scribble_fraction: float = 0.6, jitter: int = 32, region: str = "train",
                 rng: np.random.Generator | None = None, intensity: float = 0.0) -> None:
        if region not in ("train", "val"):
            raise ValueError(f"region must be 'train' or 'val', got '{region}'")
        if not images or not len(images) == len(scribbles) == len(val_masks):
            raise ValueError("images, scribbles and val_masks must be non-empty lists of equal length")
        self.patch = patch
        self.scribble_fraction = scribble_fraction
        self.jitter = jitter
        self.intensity = intensity
        self.training = region == "train"
        self.rng = rng if rng is not None else np.random.default_rng()
        self._has_validation = any(box is not None and bool(scribble[box].any())
                                   for scribble, box in zip(scribbles, val_masks, strict=True))
        self.images, self.scribbles, self.regions = [], [], []
        for image, scribble, val_mask in zip(images, scribbles, val_masks, strict=True):
            image, scribble, region_mask = self._prepare(image, scribble, val_mask)
            self.images.append(image)
            self.scribbles.append(scribble)
            self.regions.append(region_mask)
        self.widths = np.array([image.shape[2] for image in self.images], np.int64)
        self.areas = np.array([image.shape[1] * image.shape[2] for image in self.images], np.int64)
        self.region_area = np.array([region_mask.sum() for region_mask in self.regions], np.int64)
        if not self.region_area.any():
            raise InputError(f"no pixels to sample {region} patches from (the validation box covers "
                             f"{'every image' if self.training else 'nothing'})")
        # The region's scribbled pixels of all images, computed once: owning image and flat index.
        flat_indices = [np.flatnonzero(s.any(axis=0)) for s in self.scribbles]
        self.scribbled_owner = np.repeat(np.arange(len(flat_indices)), [len(f) for f in flat_indices])
        self.scribbled_flat = np.concatenate(flat_indices)

    @property
    def has_validation(self) -> bool:
        """True when some validation box holds scribbles."""
        return self._has_validation

    def sample(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``n`` patches: (x (n, C, P, P) float32, scribbles (n, S, P, P) float32)."""
        n_scribbled = int(round(n * self.scribble_fraction)) if len(self.scribbled_flat) else 0
        centres = zip(self._scribble_centres(n_scribbled), self._uniform_centres(n - n_scribbled), strict=True)
        owners, rows, cols = (np.concatenate(pair) for pair in centres)
        channels, n_scribble_maps = self.images[0].shape[0], self.scribbles[0].shape[0]
        x = np.empty((n, channels, self.patch, self.patch), np.float32)
        s = np.empty((n, n_scribble_maps, self.patch, self.patch), np.float32)
        for index, (owner, row, col) in enumerate(zip(owners, rows, cols, strict=True)):
            x[index], s[index] = self._crop(owner, row, col)
        return x, s

    # --- construction helpers ---

    def _prepare(self, image: np.ndarray, scribble: np.ndarray,
                 val_mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pad to at least the patch size; keep only the region's scribbles as (S, H, W) uint8."""
        height, width = image.shape[1:]
        box = np.zeros((height, width), bool) if val_mask is None else val_mask.astype(bool)
        region = ~box if self.training else box
        scribble = np.moveaxis(scribble.astype(np.uint8) * region[..., None], -1, 0)
        pad_y, pad_x = max(self.patch - height, 0), max(self.patch - width, 0)
        if pad_y or pad_x:
            pads = ((pad_y // 2, pad_y - pad_y // 2), (pad_x // 2, pad_x - pad_x // 2))
            image = np.pad(image, ((0, 0), *pads), mode="reflect" if min(height, width) > 1 else "edge")
            scribble = np.pad(scribble, ((0, 0), *pads))
            region = np.pad(region, pads)
        return np.ascontiguousarray(image, np.float32), np.ascontiguousarray(scribble), region

    # --- centres: each returns (image index, row, col) int64 arrays ---

    def _scribble_centres(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Scribbled pixels of the region, uniform over all images' scribbles; jittered when training."""
        chosen = self.rng.integers(0, len(self.scribbled_flat), n)
        owners, flat = self.scribbled_owner[chosen], self.scribbled_flat[chosen]
        rows, cols = flat // self.widths[owners], flat % self.widths[owners]
        if self.training and self.jitter > 0:
            moved_rows = rows + self.rng.integers(-self.jitter, self.jitter + 1, n)
            moved_cols = cols + self.rng.integers(-self.jitter, self.jitter + 1, n)
            # A shift that leaves the region (the image or into the validation box) keeps the scribbled pixel.
            stays = self._in_region(owners, moved_rows, moved_cols)
            rows, cols = np.where(stays, moved_rows, rows), np.where(stays, moved_cols, cols)
        return owners, rows, cols

    def _uniform_centres(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pixels uniform over the region of all images (rejection sampling: no per-pixel index arrays)."""
        acceptance = self.region_area.sum() / self.areas.sum()
        empty = np.zeros(0, np.int64)
        found = [(empty, empty, empty)]
        missing = n
        while missing > 0:
            # A pixel uniform over all images, kept when inside the region: uniform over the region's pixels.
            draws = int(min(np.ceil(1.5 * missing / acceptance) + 8, 1_000_000))
            owners, flat = _split_global_index(self.rng.integers(0, self.areas.sum(), draws), self.areas)
            rows, cols = flat // self.widths[owners], flat % self.widths[owners]
            kept = np.flatnonzero(self._in_region(owners, rows, cols))[:missing]
            found.append((owners[kept], rows[kept], cols[kept]))
            missing -= len(kept)
        owners, rows, cols = (np.concatenate(parts) for parts in zip(*found, strict=True))
        return owners, rows, cols

    def _in_region(self, owners: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Bool per point: inside its image and inside the sampling region."""
        heights = self.areas[owners] // self.widths[owners]
        inside = (rows >= 0) & (rows < heights) & (cols >= 0) & (cols < self.widths[owners])
        for owner in np.unique(owners[inside]):
            points = np.flatnonzero(inside & (owners == owner))
            inside[points] = self.regions[owner][rows[points], cols[points]]
        return inside

    # --- cropping ---

    def _crop(self, owner: int, row: int, col: int) -> tuple[np.ndarray, np.ndarray]:
        """The patch centred (as far as the image allows) on (row, col), augmented when training."""
        image, scribble = self.images[owner], self.scribbles[owner]
        height, width = image.shape[1:]
        top = int(np.clip(row - self.patch // 2, 0, height - self.patch))
        left = int(np.clip(col - self.patch // 2, 0, width - self.patch))
        window = (slice(None), slice(top, top + self.patch), slice(left, left + self.patch))
        x, s = image[window], scribble[window]
        if self.training:
            turns = int(self.rng.integers(4))
            x, s = np.rot90(x, turns, axes=(1, 2)), np.rot90(s, turns, axes=(1, 2))
            if self.rng.random() < 0.5:
                x, s = x[..., ::-1], s[..., ::-1]
            if self.intensity:
                x = x * np.exp(self.rng.uniform(-self.intensity, self.intensity, (len(x), 1, 1))).astype(np.float32)
        return x, s


def _split_global_index(index: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map indices into the concatenation of blocks of ``sizes`` to (block, index within block)."""
    starts = np.concatenate([[0], np.cumsum(sizes)])
    block = np.searchsorted(starts, index, side="right") - 1
    return block, index - starts[block]
