"""The training loop: scribbles + blind-spot reconstruction, checkpoint ensembles, clean stops.

Reads top to bottom: :class:`Trainer.run` sets up, then runs epochs grouped into ``nsaves``
cycles. Each cycle keeps its best-validation checkpoint (validated with dropout off) and may end
early after ``patience`` epochs without improvement; the next cycle resets the optimiser and
continues from the current weights. How long the run and its cycles last is a schedule's choice:
``epochs`` (:class:`_EpochSchedule`) or, when ``max_minutes`` is set, the time budget
(:class:`_BudgetSchedule`). After every epoch the full training state is saved atomically, so a
stop, a crash or a server restart resumes from the last finished epoch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, get_args

import numpy as np
import pandas as pd
import torch

from .calibrate import calibrate
from .config import RunConfig, TrainConfig
from .dataset import TrainingImage
from .device import autocast, compute_dtype, pick_device
from .errors import InputError
from .losses import total_loss
from .model import UNet, build_model
from .predict import Prediction, predict_with_models
from .prior import prior_weights
from .runs import (
    CONFIG_FILE,
    HISTORY_COLUMNS,
    HISTORY_FILE,
    STATE_FILE,
    THRESHOLDS_FILE,
    Run,
    checkpoint_path,
    checkpoint_paths,
    load_weights,
    read_status,
    save_training_data,
    write_preview,
    write_quality,
    write_status,
)
from .sampling import PatchSampler, blind_spots
from .scribbles import validation_box
from .separation import core_targets, gap_strokes
from .stainstrokes import run_stain_masks, with_stain_strokes
from .storage import atomic_path, write_json, write_text

# Within a time-budgeted cycle the learning rate falls along a cosine from lr to this fraction of lr,
# so the cycle's last epochs take small steps and its best checkpoint is a settled one.
LR_FLOOR = 0.05


EventKind = Literal["start", "epoch", "preview", "done", "stopped", "error"]
EVENT_KINDS: tuple[str, ...] = get_args(EventKind)


@dataclass
class TrainingEvent:
    """What the trainer tells its listener (CLI progress bar, dashboard job)."""

    kind: EventKind
    epoch: int = 0
    total_epochs: int = 0  # with a time budget an estimate from the pace so far; 0 before the first epoch
    cycle: int = 0
    elapsed_s: float = 0.0
    remaining_s: float | None = None  # None until the first epoch has been timed (without a budget)
    budget_s: float | None = None  # the time budget; None when epochs set the run's length
    losses: dict[str, float] = field(default_factory=dict)
    preview: Prediction | None = None
    message: str = ""

    def __post_init__(self) -> None:
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"unknown training event '{self.kind}' (one of {', '.join(EVENT_KINDS)})")


@dataclass
class _Progress:
    """The resumable part of the loop, saved in state.pt after every epoch.

    The cycle fields came with time budgets: :func:`_restored_progress` fills them in for older files.
    """

    epoch: int = 0  # epochs completed over all cycles (without a budget, patience makes it skip ahead)
    cycle: int = 0  # the current ensemble cycle
    best: float = math.inf  # best validation loss of the current cycle
    since_best: int = 0
    elapsed_s: float = 0.0  # training time; the pause between a stop and its resume does not count
    cycle_start_s: float | None = None  # time budget only: elapsed_s when the current cycle began
    cycle_end_s: float | None = None  # time budget only: elapsed_s when the current cycle's share runs out

    def enter_next_cycle(self) -> None:
        """Move on to the next cycle, whose best validation loss starts over."""
        self.cycle += 1
        self.best, self.since_best = math.inf, 0


def _restored_progress(saved: dict[str, Any], train: TrainConfig) -> _Progress:
    """The loop's progress as saved in state.pt.

    Files written before time budgets have no cycle: it is the one their epoch counter was in, since
    that is how cycles were counted then (at most the last, for a run that crashed as it finished).
    """
    cycle = min(saved["epoch"] // _cycle_length(train), train.nsaves - 1)
    return _Progress(**{"cycle": cycle, **saved})


def _cycle_length(train: TrainConfig) -> int:
    """Epochs per ensemble cycle when epochs, not a time budget, set the run's length."""
    return math.ceil(train.epochs / train.nsaves)


class _Schedule(Protocol):
    """Decides how long the run and its ensemble cycles last; the loop asks it after every epoch."""

    budget_s: float | None  # the time budget in seconds; None when epochs set the length
    end_message: str  # the status message of a run that trained to its end

    def begin(self, progress: _Progress) -> None:
        """Prepare the current cycle at the start (or resume) of a run."""

    def learning_rate_factor(self, progress: _Progress) -> float:
        """The next epoch's learning rate as a fraction of ``lr``."""

    def cycle_over(self, progress: _Progress) -> bool:
        """Whether the cycle ends after the epoch just finished (the run not being over)."""

    def next_cycle(self, progress: _Progress) -> None:
        """Move ``progress`` on to the next cycle."""

    def finished(self, progress: _Progress) -> bool:
        """Whether the run has trained to its end."""

    def total_epochs(self, progress: _Progress) -> int:
        """The epochs the run will have trained at its end, as far as known now (0: unknown)."""

    def remaining_s(self, progress: _Progress) -> float | None:
        """Seconds of training left, as far as known now (None: unknown)."""


class _EpochSchedule:
    """No time budget: ``nsaves`` cycles of ``ceil(epochs / nsaves)`` epochs at a constant learning rate.

    Patience ends a cycle early; the epoch counter then jumps to the next cycle's first epoch, so such a
    run trains fewer than ``epochs`` epochs and its history skips the numbers in between.
    """

    budget_s = None
    end_message = "finished"

    def __init__(self, train: TrainConfig) -> None:
        self.epochs, self.patience, self.cycle_length = train.epochs, train.patience, _cycle_length(train)

    def begin(self, progress: _Progress) -> None:
        pass  # nothing to prepare: the epoch counter alone says where the run is

    def learning_rate_factor(self, progress: _Progress) -> float:
        return 1.0

    def cycle_over(self, progress: _Progress) -> bool:
        return progress.since_best >= self.patience or progress.epoch % self.cycle_length == 0

    def next_cycle(self, progress: _Progress) -> None:
        progress.enter_next_cycle()
        # the last cycle ending early jumps to the end, not past it, so the epoch never reads "42 / 40"
        progress.epoch = min(progress.cycle * self.cycle_length, self.epochs)

    def finished(self, progress: _Progress) -> bool:
        return progress.epoch >= self.epochs

    def total_epochs(self, progress: _Progress) -> int:
        return self.epochs

    def remaining_s(self, progress: _Progress) -> float | None:
        """The pace so far times the epochs left; unknown before the first epoch."""
        if not progress.epoch:
            return None
        return progress.elapsed_s / progress.epoch * (self.epochs - progress.epoch)


class _BudgetSchedule:
    """A time budget: the run trains for ``max_minutes`` and ``epochs`` is ignored.

    Cycle k starts with an equal share of the time left, (budget - elapsed) / (nsaves - k). Patience may
    end it sooner, which leaves its unused time to the later cycles; a cycle whose share has run out ends
    after the epoch in progress, and the next share absorbs the overrun. The last cycle ignores patience
    and trains until the budget is spent (its best checkpoint is still the one kept). Within a cycle the
    learning rate follows a cosine from lr to ``LR_FLOOR`` * lr over the cycle's share; the optimiser is
    new at each cycle, as without a budget. The run ends after the epoch that reaches the budget.
    """

    end_message = "time budget reached"

    def __init__(self, train: TrainConfig) -> None:
        self.budget_s, self.nsaves, self.patience = train.max_minutes * 60, train.nsaves, train.patience

    def begin(self, progress: _Progress) -> None:
        """Give the current cycle its share of the time, unless it has one (a resumed run keeps it)."""
        if progress.cycle_end_s is None:
            self._give_share(progress)

    def learning_rate_factor(self, progress: _Progress) -> float:
        """Cosine from 1 at the cycle's start to ``LR_FLOOR`` at the end of its share."""
        share = progress.cycle_end_s - progress.cycle_start_s
        spent = min((progress.elapsed_s - progress.cycle_start_s) / share, 1.0) if share > 0 else 1.0
        return LR_FLOOR + (1.0 - LR_FLOOR) * 0.5 * (1.0 + math.cos(math.pi * spent))

    def cycle_over(self, progress: _Progress) -> bool:
        if progress.cycle == self.nsaves - 1:
            return False  # the last cycle trains until the budget is spent
        return progress.since_best >= self.patience or progress.elapsed_s >= progress.cycle_end_s

    def next_cycle(self, progress: _Progress) -> None:
        progress.enter_next_cycle()
        self._give_share(progress)

    def finished(self, progress: _Progress) -> bool:
        return progress.elapsed_s >= self.budget_s

    def total_epochs(self, progress: _Progress) -> int:
        """An estimate from the pace so far: the epochs it takes to reach the budget; unknown before the first."""
        if not progress.epoch or not progress.elapsed_s:
            return 0
        return max(progress.epoch, math.ceil(self.budget_s * progress.epoch / progress.elapsed_s))

    def remaining_s(self, progress: _Progress) -> float:
        return max(self.budget_s - progress.elapsed_s, 0.0)

    def _give_share(self, progress: _Progress) -> None:
        left = max(self.budget_s - progress.elapsed_s, 0.0)
        progress.cycle_start_s = progress.elapsed_s
        progress.cycle_end_s = progress.elapsed_s + left / (self.nsaves - progress.cycle)


def _schedule(train: TrainConfig) -> _Schedule:
    """The time budget sets the run's length when there is one, else the epochs."""
    return _BudgetSchedule(train) if train.max_minutes else _EpochSchedule(train)


def _set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Use ``lr`` from the next step on (Adam's moment estimates are kept)."""
    for group in optimizer.param_groups:
        group["lr"] = lr


class LiveData(Protocol):
    """Where a live run (training while the user scribbles) gets newer scribbles and what to preview."""

    def updated_dataset(self) -> list[TrainingImage] | None:
        """The training images when their scribbles changed since the last call, else None."""

    def preview(self) -> tuple[str, np.ndarray] | None:
        """(name, normalised image) to predict after each epoch, or None."""


class Trainer:
    """Trains a run folder from scribbled images; see the module docstring.

    Args:
        config: the run's configuration (ignored when resuming: the saved one wins).
        dataset: images with scribbles; validation boxes are placed where missing.
        run_dir: the run folder; an unfinished run there is resumed.
        on_event: called from the training thread with every :class:`TrainingEvent`.
        init_from: an earlier run folder to fine-tune from (the iterative loop).
        preview_image: (C, H, W) normalised image predicted every ``preview_every`` epochs.
        preview_name: the preview image's name, kept with the preview (to show it over the image).
        stop_event: set it (from any thread) to stop after the current batch.
        device: where to train; defaults to ``config.train.device`` (the job manager passes each job's GPU).
        annotation_minutes: the time spent scribbling so far, when the caller knows it (the learning curve).
        live: makes this a live run: newer scribbles enter the sampler at the next epoch, the preview follows
            what ``live`` names, and a stop request ends the run as done (calibrated, ready to fine-tune).
    """

    def __init__(self, config: RunConfig, dataset: list[TrainingImage], run_dir: str | Path,
                 on_event: Callable[[TrainingEvent], None] | None = None, init_from: str | Path | None = None,
                 preview_image: np.ndarray | None = None, stop_event: threading.Event | None = None,
                 preview_name: str = "",
                 device: torch.device | None = None, annotation_minutes: float | None = None,
                 live: LiveData | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.annotation_minutes = annotation_minutes
        self.live = live
        resuming = (self.run_dir / STATE_FILE).exists()
        self.config = RunConfig.load_run(self.run_dir / CONFIG_FILE) if resuming else config.validate()
        self.dataset = [self._with_validation_box(item) for item in dataset]
        self.on_event = on_event or (lambda event: None)
        self.init_from = None if init_from is None else Path(init_from)
        self.preview_image, self.preview_name = preview_image, preview_name
        self.stop_event = stop_event or threading.Event()
        self.device = device or pick_device(self.config.train.device)
        self.compute_dtype = compute_dtype(self.config.train.precision, self.device)
        self.schedule = _schedule(self.config.train)
        self._stain_cache: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
        self._check_dataset()

    def request_stop(self) -> None:
        """Ask the loop to stop after the current batch (safe from any thread)."""
        self.stop_event.set()

    # --- the loop ------------------------------------------------------------------------------

    def run(self) -> Run:
        """Train until the epochs or the time budget are used up or a stop request ends it; return the run."""
        if read_status(self.run_dir).get("state") == "done":
            return Run.load(self.run_dir)
        cfg, schedule = self.config.train, self.schedule
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.config.save(self.run_dir / CONFIG_FILE)
        if not (self.run_dir / STATE_FILE).exists():  # a resumed run keeps the record of its start
            save_training_data(self.run_dir, self.dataset, self.config, self.annotation_minutes)
        model, optimizer, progress, rng, generator = self._setup()
        train_sampler, validation = self._samplers(rng, generator)
        schedule.begin(progress)
        started = time.monotonic() - progress.elapsed_s
        precision = str(self.compute_dtype).removeprefix("torch.")
        self._emit("start", progress, message=f"training on {self.device} in {precision}")
        try:
            while not schedule.finished(progress):
                if self.live is not None and self._take_new_scribbles(progress):
                    train_sampler, validation = self._samplers(rng, generator)
                cycle, lr = progress.cycle, cfg.lr * schedule.learning_rate_factor(progress)
                _set_learning_rate(optimizer, lr)
                losses = self._train_epoch(model, optimizer, train_sampler, generator)
                if losses is None and self.live is not None:
                    return self._finish("done", progress, "live mode ended")
                if losses is None:  # stopped mid-epoch: the last saved epoch stays the resume point
                    return self._finish("stopped", progress, "stopped by request")
                progress.epoch += 1
                progress.elapsed_s = time.monotonic() - started
                losses["val"] = self._validate(model, validation) if validation else losses["total"]
                self._keep_best(model, cycle, losses["val"], progress)
                self._append_history(progress, cycle, lr, losses)
                if not schedule.finished(progress) and schedule.cycle_over(progress):
                    schedule.next_cycle(progress)
                    optimizer = self._optimizer(model)
                self._save_state(model, optimizer, progress, rng, generator)
                self._emit("epoch", progress, losses=losses, cycle=cycle)
                self._maybe_preview(model, progress)
            return self._finish("done", progress, schedule.end_message)
        except Exception as error:
            write_status(self.run_dir, "failed", epoch=progress.epoch, total_epochs=schedule.total_epochs(progress),
                         budget_s=schedule.budget_s, message=str(error))
            self._emit("error", progress, message=str(error))
            raise

    def _train_epoch(self, model: UNet, optimizer: torch.optim.Optimizer, sampler: PatchSampler,
                     generator: torch.Generator) -> dict[str, float] | None:
        cfg = self.config.train
        model.train()
        sums: dict[str, float] = {}
        batches = max(1, cfg.patches_per_epoch // cfg.batch)
        for _ in range(batches):
            if self.stop_event.is_set():
                return None
            x, scribbles = sampler.sample(cfg.batch)
            corrupted, mask = blind_spots(torch.from_numpy(x), cfg.ratio, cfg.blind_radius, generator)
            total, parts = self._loss(model, corrupted, torch.from_numpy(x), mask, torch.from_numpy(scribbles))
            if not torch.isfinite(total):
                raise InputError(f"training diverged: the loss became {float(total.detach())}; lower the learning "
                                 "rate (lr) or the loss weights and train again")
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            for key, value in parts.items():
                sums[key] = sums.get(key, 0.0) + float(value.detach())
        return {key: value / batches for key, value in sums.items()}

    def _loss(self, model: UNet, corrupted: torch.Tensor, clean: torch.Tensor, mask: torch.Tensor,
              scribbles: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        device = self.device
        with autocast(device, self.compute_dtype):
            output = model(corrupted.to(device, non_blocking=True))
        return total_loss(output.float(), clean.to(device), mask.to(device), scribbles.to(device), self.config)

    def _validate(self, model: UNet, validation: list[tuple[torch.Tensor, ...]]) -> float:
        """Mean total loss on the fixed validation batches, dropout off (the reference kept it on)."""
        model.eval()
        with torch.inference_mode():
            losses = [float(self._loss(model, *batch)[0]) for batch in validation]
        return float(np.mean(losses))

    def _keep_best(self, model: UNet, cycle: int, val_loss: float, progress: _Progress) -> None:
        if val_loss < progress.best:
            progress.best, progress.since_best = val_loss, 0
            with atomic_path(checkpoint_path(self.run_dir, cycle)) as tmp:
                torch.save(model.state_dict(), tmp)
        else:
            progress.since_best += 1

    def _take_new_scribbles(self, progress: _Progress) -> bool:
        """A live run's newer scribbles, when there are any: the validation strokes change with them, so the
        validation losses before and after do not compare and the best checkpoint is chosen afresh."""
        fresh = self.live.updated_dataset()
        if not fresh:
            return False
        self.dataset = [self._with_validation_box(item) for item in fresh]
        self._check_dataset()
        progress.best, progress.since_best = math.inf, 0
        return True

    def _maybe_preview(self, model: UNet, progress: _Progress) -> None:
        every = self.config.train.preview_every
        if not every or (progress.epoch != 1 and progress.epoch % every):
            return
        target = self.live.preview() if self.live is not None else (
            None if self.preview_image is None else (self.preview_name, self.preview_image))
        if target is None:
            return
        name, image = target
        prediction = predict_with_models([model], self.config, image, passes=1, mc_dropout=False)
        write_preview(self.run_dir, progress.epoch, name, prediction.arrays())
        self._emit("preview", progress, preview=prediction)

    def _finish(self, state: Literal["done", "stopped"], progress: _Progress, message: str) -> Run:
        if checkpoint_paths(self.run_dir):
            run = Run.load(self.run_dir)
            found = calibrate(run, self.dataset, models=[self._load(path) for path in run.checkpoints])
            write_json(self.run_dir / THRESHOLDS_FILE, found.thresholds)
            write_quality(self.run_dir, **found.quality)
        write_status(self.run_dir, state, epoch=progress.epoch, total_epochs=self.schedule.total_epochs(progress),
                     elapsed_s=progress.elapsed_s, budget_s=self.schedule.budget_s, message=message)
        self._emit("done" if state == "done" else "stopped", progress, message=message)
        return Run.load(self.run_dir)

    def _emit(self, kind: EventKind, progress: _Progress, **details) -> None:
        timing = {"epoch": progress.epoch, "total_epochs": self.schedule.total_epochs(progress),
                  "elapsed_s": progress.elapsed_s, "remaining_s": self.schedule.remaining_s(progress),
                  "budget_s": self.schedule.budget_s}
        if kind in ("start", "epoch"):
            write_status(self.run_dir, "running", **timing)
        self.on_event(TrainingEvent(kind=kind, **timing, **details))

    # --- setup, state and history ----------------------------------------------------------------

    def _setup(self) -> tuple[UNet, torch.optim.Optimizer, _Progress, np.random.Generator, torch.Generator]:
        torch.manual_seed(self.config.train.seed)
        model = build_model(self.config).to(self.device)
        rng = np.random.default_rng(self.config.train.seed)
        generator = torch.Generator().manual_seed(self.config.train.seed)
        progress = _Progress()
        state_path = self.run_dir / STATE_FILE
        if state_path.exists():
            state = load_weights(state_path, self.device)
            model.load_state_dict(state["model"])
            optimizer = self._optimizer(model)
            optimizer.load_state_dict(state["optimizer"])
            progress = _restored_progress(state["progress"], self.config.train)
            rng.bit_generator.state = state["numpy_rng"]
            generator.set_state(state["torch_rng"].cpu())  # a CPU generator; the state file loads onto the device
            return model, optimizer, progress, rng, generator
        if self.init_from is not None:
            model.load_state_dict(self._initial_weights())
        elif self.config.train.prior and (weights := prior_weights(self.config, self.device)) is not None:
            model.load_state_dict(weights, strict=False)  # without the output layer when the tasks differ
        return model, self._optimizer(model), progress, rng, generator

    def _initial_weights(self) -> dict[str, torch.Tensor]:
        earlier = Run.load(self.init_from)
        if (earlier.config.n_channels, earlier.config.n_outputs, dataclasses.astuple(earlier.config.model)) != (
                self.config.n_channels, self.config.n_outputs, dataclasses.astuple(self.config.model)):
            raise InputError("cannot fine-tune: that run has different channels, tasks or network shape",
                             self.init_from)
        latest = earlier.require_checkpoints()[-1]
        return load_weights(latest, self.device)

    def _optimizer(self, model: UNet) -> torch.optim.Optimizer:
        cfg = self.config.train
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def _save_state(self, model: UNet, optimizer: torch.optim.Optimizer, progress: _Progress,
                    rng: np.random.Generator, generator: torch.Generator) -> None:
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "progress": dataclasses.asdict(progress), "numpy_rng": rng.bit_generator.state,
                 "torch_rng": generator.get_state()}
        with atomic_path(self.run_dir / STATE_FILE) as tmp:
            torch.save(state, tmp)

    def _append_history(self, progress: _Progress, cycle: int, lr: float, losses: dict[str, float]) -> None:
        row = {"epoch": progress.epoch, "cycle": cycle, "elapsed_s": round(progress.elapsed_s, 3), **losses, "lr": lr}
        path = self.run_dir / HISTORY_FILE
        history = pd.read_csv(path) if path.exists() else pd.DataFrame(columns=HISTORY_COLUMNS)
        history = pd.concat([history[history.epoch < progress.epoch], pd.DataFrame([row])], ignore_index=True)
        write_text(path, history.reindex(columns=HISTORY_COLUMNS).to_csv(index=False))

    # --- data ------------------------------------------------------------------------------------

    def _with_validation_box(self, item: TrainingImage) -> TrainingImage:
        if item.val_mask is not None:
            return item
        box = validation_box(item.scribbles, self.config.train.val_fraction)
        return dataclasses.replace(item, val_mask=box)

    def _check_dataset(self) -> None:
        if not self.dataset:
            raise InputError("no images to train on")
        for item in self.dataset:
            item.check(self.config.n_channels, self.config.n_scribble_channels)
        if not any(item.scribbles.any() for item in self.dataset):
            raise InputError("no scribbles: draw at least one foreground and one background stroke")

    def _targets(self, index: int, item: TrainingImage) -> np.ndarray:
        """(H, W, S [+ 3] [+ 1]) what the loss learns from: the scribbles with the automatic stain strokes
        (``train.stain_strokes``), then the cell-core targets when separating, then the gaps of touching cells when
        they have a weight of their own (``train.wgap``). Cores and gaps come from the user's strokes alone."""
        # the same automatic strokes on every call (live mode rebuilds the samplers) and on a resumed run
        rng = np.random.default_rng([self.config.train.seed, index])
        maps = [with_stain_strokes(item.scribbles, item.image, item.val_mask, self.config, rng,
                                   masks=lambda: self._stain_masks(item))]
        if self.config.separation:
            maps.append(core_targets(item.scribbles, self.config))
        if self.config.train.wgap > 0:
            maps.append(gap_strokes(item.scribbles, self.config)[..., np.newaxis].astype(np.uint8))
        return np.concatenate(maps, axis=-1)

    def _stain_masks(self, item: TrainingImage) -> tuple[np.ndarray, np.ndarray]:
        """The image's confident stain masks, computed once per image content: live mode rebuilds the targets on
        every new stroke."""
        key = (item.name, hashlib.blake2b(item.image.tobytes(), digest_size=16).hexdigest())
        if key not in self._stain_cache:
            self._stain_cache[key] = run_stain_masks(item.image, self.config)
        return self._stain_cache[key]

    def _samplers(self, rng: np.random.Generator,
                  generator: torch.Generator) -> tuple[PatchSampler, list[tuple[torch.Tensor, ...]]]:
        cfg = self.config.train
        arrays = ([item.image for item in self.dataset],
                  [self._targets(index, item) for index, item in enumerate(self.dataset)],
                  [item.val_mask for item in self.dataset])
        train = PatchSampler(*arrays, patch=cfg.patch, scribble_fraction=cfg.scribble_fraction,
                             intensity=cfg.intensity_jitter,
                             jitter=cfg.jitter, region="train", rng=rng)
        val_sampler = PatchSampler(*arrays, patch=cfg.patch, scribble_fraction=1.0, jitter=cfg.jitter,
                                   region="val", rng=np.random.default_rng(cfg.seed + 1))
        if not val_sampler.has_validation:
            return train, []
        # A fixed validation set (patches and blind spots) so epochs are comparable.
        val_generator = torch.Generator().manual_seed(cfg.seed + 1)
        batches = []
        for start in range(0, cfg.val_patches, cfg.batch):
            x, scribbles = val_sampler.sample(min(cfg.batch, cfg.val_patches - start))
            corrupted, mask = blind_spots(torch.from_numpy(x), cfg.ratio, cfg.blind_radius, val_generator)
            batches.append((corrupted, torch.from_numpy(x), mask, torch.from_numpy(scribbles)))
        return train, batches

    def _load(self, path: Path) -> UNet:
        model = build_model(self.config).to(self.device)
        model.load_state_dict(load_weights(path, self.device))
        return model


def step_pace(config: RunConfig, device: torch.device | None = None, batches: int = 2) -> float:
    """Patches per second that training steps with ``config`` take on ``device``, timed on random data after a
    warm-up batch (sampling, blind spots, forward, backward; no validation or previews): the pace to estimate a
    first run's length before any run has been timed here."""
    cfg = config.train
    side, channels = 2 * cfg.patch, config.n_channels
    rng = np.random.default_rng(0)
    scribbles = np.zeros((side, side, config.n_scribble_channels), np.uint8)
    for channel in range(config.n_scribble_channels):  # a stroke of each class and background: every loss term runs
        scribbles[4 + 3 * channel, :, channel] = 1
    image = TrainingImage("pace", rng.random((channels, side, side), dtype=np.float32), scribbles)
    timed = dataclasses.replace(config, train=dataclasses.replace(cfg, patches_per_epoch=cfg.batch, prior=False))
    with tempfile.TemporaryDirectory(prefix="impartial-pace-") as folder:
        trainer = Trainer(timed, [image], folder, device=device)
        model, optimizer, _, rng, generator = trainer._setup()
        sampler, _ = trainer._samplers(rng, generator)
        trainer._train_epoch(model, optimizer, sampler, generator)  # warm-up: allocation, kernel choice
        started = time.perf_counter()
        for _ in range(batches):
            trainer._train_epoch(model, optimizer, sampler, generator)
        return batches * cfg.batch / (time.perf_counter() - started)
