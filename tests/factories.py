"""Small, deterministic test inputs shared by several test modules (not a conftest: tests/browser has its own)."""

from impartial.config import RunConfig, apply_overrides, preset_config
from impartial.dataset import TrainingImage
from impartial.io import normalize_percentile
from impartial.scribbles import auto_scribbles
from impartial.synthetic import class_labels, make_tissue
from impartial.train import Trainer


def tiny_config(tasks: str = "whole_cell", **overrides) -> RunConfig:
    """A network and schedule small enough for tests: seconds on one CPU thread."""
    settings = {"model.depth": 2, "model.base": 8, "model.dropout": 0.2, "train.epochs": 3, "train.patch": 48,
                "train.patches_per_epoch": 16, "train.batch": 8, "train.nsaves": 1, "train.val_patches": 8,
                "train.preview_every": 1, "predict.tile": 64, "predict.overlap": 16, "predict.mcdrop": 2,
                # float32 on every machine, so numeric tolerances do not depend on the CPU (bfloat16 has its tests)
                "train.precision": "float32"}
    return apply_overrides(preset_config("quick", tasks), {**settings, **overrides}).validate()


def scribbled_images(config: RunConfig, seeds=(1, 2), size: int = 96,
                     fraction: float = 0.5) -> list[TrainingImage]:
    """Synthetic tissue images with automatic scribbles on ``fraction`` of the cells."""
    images = []
    for seed in seeds:
        tissue = make_tissue(size, size, seed=seed)
        scribbles, val_mask = auto_scribbles(class_labels(tissue, config), fraction, seed=seed)
        images.append(TrainingImage(f"img{seed}", normalize_percentile(tissue.image), scribbles, val_mask,
                                    tissue.cells))
    return images


def tiny_project_run(project, separation: bool | None = None, **overrides) -> str:
    """Train a run of ``project`` on its settings with :func:`tiny_config`'s network and schedule (``overrides``
    on top), without the shipped prior (the test stays self-contained); returns the run id. ``separation``: the
    cell-core output on or off, None = the project's setting."""
    config = project.config_defaults()
    tiny = tiny_config(**overrides)
    config.model, config.train, config.predict = tiny.model, tiny.train, tiny.predict
    config.train.prior = False
    if separation is not None:
        config.separation = separation
    return Trainer(config, project.training_set(config), project.new_run_dir()).run().dir.name


def serve_data_root(monkeypatch, root) -> None:
    """Make ``root`` the dashboard's data root (``$IMPARTIAL_DATA``) with access control off, for this test."""
    for variable in ("IMPARTIAL_PASSWORD", "IMPARTIAL_USERS", "IMPARTIAL_USERS_FILE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("IMPARTIAL_DATA", str(root))
