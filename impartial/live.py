"""Live mode: a run that keeps training while the user scribbles (see :class:`impartial.train.LiveData`).

The trainer asks before every epoch whether the project's scribbles changed (one ``stat`` per image), and
after it which image to preview: the one the user looks at, named in the run folder's ``focus.json`` by the
Scribble page. Each new stroke thus reaches the patch sampler at the next epoch, and the canvas overlay
follows the newest weights.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from .config import RunConfig, preset_config
from .dataset import TrainingImage
from .errors import InputError
from .project import Project
from .runs import focus

LIVE_MINUTES = 30.0  # a live run ends by itself after this long (the user usually turns it off before)
LIVE_PATCHES_PER_EPOCH = 64  # short epochs: a new stroke is trained on within a second or two
LIVE_PATCH = 64  # small patches: a quarter of the quick preset's work per patch

log = logging.getLogger(__name__)


def live_config(project: Project, minutes: float = LIVE_MINUTES) -> RunConfig:
    """The project's tasks and channels on the quick network, in short epochs with a preview after each, one
    ensemble cycle over a time budget: fast feedback rather than the best final model (fine-tune it later)."""
    quick = preset_config("quick")
    defaults = project.config_defaults()
    train = dataclasses.replace(quick.train, max_minutes=minutes, nsaves=1, preview_every=1, patch=LIVE_PATCH,
                                patches_per_epoch=LIVE_PATCHES_PER_EPOCH)
    return dataclasses.replace(quick, channels=defaults.channels, tasks=defaults.tasks, train=train,
                               instances=defaults.instances)


class ProjectLiveData:
    """A project's scribbles and focus image for a live run in ``run_dir``."""

    def __init__(self, project: Project, config: RunConfig, run_dir: str | Path) -> None:
        self.project, self.config, self.run_dir = project, config, Path(run_dir)
        self._stamps = self._current_stamps()

    def _current_stamps(self) -> dict[str, tuple[int, int, int]]:
        return {name: self.project.scribbles_stamp(name) for name in self.project.images()}

    def updated_dataset(self) -> list[TrainingImage] | None:
        stamps = self._current_stamps()
        if stamps == self._stamps:
            return None
        self._stamps = stamps
        try:
            return self.project.training_set(self.config)
        except InputError as error:  # everything erased: keep training on what there was
            log.info("live run keeps its scribbles: %s", error)
            return None

    def preview(self) -> tuple[str, np.ndarray] | None:
        name = focus(self.run_dir)
        if name is None or name not in self.project.images():
            return None
        try:
            return name, self.project.normalized(name)
        except InputError:
            return None
