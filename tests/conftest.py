"""Shared test settings: small, deterministic, CPU-friendly."""

import os

import torch

# Tests run beside other work on small machines; one thread keeps them predictable.
torch.set_num_threads(int(os.environ.get("IMPARTIAL_TEST_THREADS", "1")))


import pytest  # noqa: E402

from impartial.config import RunConfig, apply_overrides, preset_config  # noqa: E402


def tiny_config(tasks: str = "whole_cell", **overrides) -> RunConfig:
    """A network and schedule small enough for tests: seconds on one CPU thread."""
    settings = {"model.depth": 2, "model.base": 8, "model.dropout": 0.2, "train.epochs": 3, "train.patch": 48,
                "train.patches_per_epoch": 16, "train.batch": 8, "train.nsaves": 1, "train.val_patches": 8,
                "train.preview_every": 1, "predict.tile": 64, "predict.overlap": 16, "predict.mcdrop": 2}
    return apply_overrides(preset_config("quick", tasks), {**settings, **overrides}).validate()


@pytest.fixture
def small_dataset():
    """Two scribbled 96 x 96 synthetic images (whole-cell task) and a config for them."""
    from impartial.dataset import TrainingImage
    from impartial.io import normalize_percentile
    from impartial.scribbles import auto_scribbles
    from impartial.synthetic import class_labels, make_tissue

    config = tiny_config()
    images = []
    for seed in (1, 2):
        tissue = make_tissue(96, 96, seed=seed)
        scribbles, val_mask = auto_scribbles(class_labels(tissue, config), 0.5, seed=seed)
        images.append(TrainingImage(f"img{seed}", normalize_percentile(tissue.image), scribbles, val_mask,
                                    tissue.cells))
    return config, images
