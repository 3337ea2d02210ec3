"""Shared test settings: small, deterministic, CPU-friendly."""

import os

import pytest
import torch

from factories import scribbled_images, tiny_config
from impartial.project import create_demo_project
from impartial.train import Trainer

# Tests run beside other work on small machines; one thread keeps them predictable.
torch.set_num_threads(int(os.environ.get("IMPARTIAL_TEST_THREADS", "1")))


@pytest.fixture
def small_dataset():
    """Two scribbled 96 x 96 synthetic images (whole-cell task) and a config for them."""
    config = tiny_config()
    return config, scribbled_images(config)


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    """A fresh data root for the dashboard, access control off."""
    for variable in ("IMPARTIAL_PASSWORD", "IMPARTIAL_USERS", "IMPARTIAL_USERS_FILE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("IMPARTIAL_DATA", str(tmp_path))
    return tmp_path


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory):
    """A demo project with two tiny trained runs: one with the cell-core output, one without. Returns
    (data root, run id with cores, run id without)."""
    root = tmp_path_factory.mktemp("trained")
    project = create_demo_project(root, n_images=2, size=96)
    ids = []
    for separation, overrides in ((True, {"train.epochs": 20, "train.lr": 0.01}), (False, {})):
        config = project.config_defaults()
        tiny = tiny_config(**overrides)
        config.model, config.train, config.predict = tiny.model, tiny.train, tiny.predict
        config.train.prior, config.separation = False, separation  # no shipped weights: the test is self-contained
        ids.append(Trainer(config, project.training_set(config), project.new_run_dir()).run().dir.name)
    return root, *ids


@pytest.fixture
def trained_root(trained_runs, monkeypatch):
    """The trained demo project's data root as the app's, access control off."""
    for variable in ("IMPARTIAL_PASSWORD", "IMPARTIAL_USERS", "IMPARTIAL_USERS_FILE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("IMPARTIAL_DATA", str(trained_runs[0]))
    return trained_runs
