"""A prior for what cells look like: the network pretrained on varied synthetic tissue, shipped with the package.

With a handful of strokes the scribbles alone cannot teach where one touching cell ends and the next begins. A run
with ``train.prior`` therefore starts from weights pretrained on synthetic tissue with complete ground truth:
membrane, cytoplasm and nuclear stains of many levels, touching cells of many sizes and shapes, stroma nuclei,
noise and uneven illumination. The scribbles then adapt it to the user's images. It is off by default: tissue like
the synthetic one gains from it, real Vectra tissue did not (README).

The weights are rebuilt, reproducibly, by ``scripts/build_prior.py`` (see :func:`pretrain`) and live in
``impartial/priors/``, one file per network shape (channels, depth, base). A run whose task outputs differ from the
prior's (other tasks or classes) takes the prior's body and keeps a fresh output layer.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from .config import RunConfig, TaskConfig, preset_config
from .device import autocast, compute_dtype, pick_device
from .io import normalize_percentile
from .losses import total_loss
from .model import UNet, build_model
from .runs import load_weights
from .sampling import PatchSampler, blind_spots
from .scribbles import shared_borders
from .storage import atomic_path
from .synthetic import SyntheticTissue, make_tissue

PRIOR_DIR = Path(__file__).parent / "priors"
HEAD_PREFIX = "head."
CORE_OUTPUTS = 1  # the separation output's channels, the last of the prior's output layer


def prior_path(config: RunConfig) -> Path:
    """Where the prior for this run's network shape lives (it may not exist)."""
    shape = config.model
    return PRIOR_DIR / f"unet_c{config.n_channels}_d{shape.depth}_b{shape.base}.pt"


def prior_weights(config: RunConfig, device: torch.device) -> dict[str, torch.Tensor] | None:
    """The prior's weights that fit this run's network (all, or all but the output layer), or None.

    Loaded with ``weights_only=True``. None when no prior was built for this shape. A run without the separation
    output takes the output layer's task rows and leaves the cell-core row out: the prior's outputs are its tasks'
    followed by the core's, as a run's are.
    """
    path = prior_path(config)
    if not path.exists():
        return None
    weights = load_weights(path, device)
    if not config.separation:
        weights = {name: value[:-CORE_OUTPUTS] if name.startswith(HEAD_PREFIX) else value
                   for name, value in weights.items()}
    expected = build_model(config).state_dict()
    fitting = {name: value.float() for name, value in weights.items()
               if name in expected and expected[name].shape == value.shape}
    if any(name not in fitting for name in expected if not name.startswith(HEAD_PREFIX)):
        return None
    return fitting


def prior_config(n_channels: int = 2) -> RunConfig:
    """The configuration the prior is trained with: the quick network, one whole-cell task, separation on."""
    channels = ["membrane", "nuclear"] if n_channels == 2 else [f"channel {index}" for index in range(n_channels)]
    config = preset_config("quick", [TaskConfig()], separation=True)
    config.channels = channels
    config.tasks[0].rec_channels = list(range(n_channels))
    return config.validate()


def varied_tissue(rng: np.random.Generator, size: int) -> SyntheticTissue:
    """One synthetic tissue with appearance and geometry drawn at random (see the module docstring)."""
    smallest = rng.uniform(4, 10)
    return make_tissue(
        size, size, seed=int(rng.integers(2 ** 31)),
        cell_radius=(smallest, smallest * rng.uniform(1.2, 2.0)),
        density=rng.uniform(0.55, 1.0),
        nuclei_only_fraction=rng.uniform(0.0, 0.6),
        noise=rng.uniform(0.005, 0.08),
        illumination=rng.uniform(0.0, 0.5),
        blur=rng.uniform(0.5, 1.8),
        warp=rng.uniform(1.0, 4.0),
        rim_width=rng.uniform(0.6, 2.5),
        cytoplasm_fill=rng.uniform(0.02, 0.8),
    )


def dense_targets(cells: np.ndarray, core_margin: int) -> np.ndarray:
    """(H, W, 5) uint8 targets of a whole-cell task with separation from complete labels.

    Channels: cell, background (the method's scribble layout), then cell core, not core and gap (as
    impartial.separation.core_targets). Touching cells are parted by a 1 px gap of background, as the method's
    training labels were; the core is each cell's part farther than ``core_margin`` px from background, the gap
    is the pixels within ``core_margin`` of where two cells touch.
    """
    touching = shared_borders(cells)
    cell = (cells > 0) & ~touching
    near_background = ndimage.distance_transform_edt(cell) <= core_margin
    near_gap = ndimage.distance_transform_edt(~touching) <= core_margin if touching.any() else touching
    return np.stack([cell, ~cell, cell & ~near_background, near_background, near_gap], axis=-1).astype(np.uint8)


def synthetic_corpus(n_images: int, size: int, seed: int, core_margin: int) -> tuple[list[np.ndarray], list]:
    """``n_images`` varied tissues: normalised (2, size, size) images and their :func:`dense_targets`."""
    rng = np.random.default_rng(seed)
    tissues = [varied_tissue(rng, size) for _ in range(n_images)]
    return ([normalize_percentile(tissue.image) for tissue in tissues],
            [dense_targets(tissue.cells, core_margin) for tissue in tissues])


def pretrain(out: str | Path, minutes: float, seed: int = 0, n_images: int = 160, size: int = 256,
             refresh_every: int = 400, on_progress: Callable[[int, float, float], None] | None = None) -> Path:
    """Train the prior from scratch on synthetic tissue for ``minutes`` and save its weights (float16) to ``out``.

    Every ``refresh_every`` steps a new corpus of ``n_images`` replaces the old one, so the network never sees the
    same tissue for long. The learning rate decays from the quick preset's along a cosine over the time budget.
    ``on_progress(step, elapsed_s, loss)`` is called every 50 steps.
    """
    config = prior_config()
    cfg = config.train
    device = pick_device(cfg.device)
    dtype = compute_dtype(cfg.precision, device)
    torch.manual_seed(seed)
    model = build_model(config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    started, step, budget = time.monotonic(), 0, minutes * 60
    sampler = None
    while (elapsed := time.monotonic() - started) < budget:
        if step % refresh_every == 0:
            images, targets = synthetic_corpus(n_images, size, seed * 100_003 + step, cfg.core_margin)
            sampler = PatchSampler(images, targets, [None] * n_images, patch=cfg.patch, scribble_fraction=0.0,
                                   region="train", rng=rng)
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * elapsed / budget))
        loss = _pretraining_step(model, optimizer, sampler, config, generator, device, dtype)
        step += 1
        if on_progress and step % 50 == 0:
            on_progress(step, elapsed, loss)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        torch.save({name: value.half() for name, value in model.state_dict().items()}, tmp)
    return out


def _pretraining_step(model: UNet, optimizer: torch.optim.Optimizer, sampler: PatchSampler, config: RunConfig,
                      generator: torch.Generator, device: torch.device, dtype: torch.dtype) -> float:
    model.train()
    x, targets = sampler.sample(config.train.batch)
    clean = torch.from_numpy(x)
    corrupted, mask = blind_spots(clean, config.train.ratio, config.train.blind_radius, generator)
    with autocast(device, dtype):
        output = model(corrupted.to(device))
    loss, _ = total_loss(output.float(), clean.to(device), mask.to(device), torch.from_numpy(targets).to(device),
                         config)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())
