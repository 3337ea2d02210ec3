"""Shared test settings: small, deterministic, CPU-friendly."""

import os

import pytest
import torch

from factories import scribbled_images, serve_data_root, tiny_config, tiny_project_run
from impartial.demo import create_demo_project

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
    serve_data_root(monkeypatch, tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory):
    """A demo project with two tiny trained runs: one with the cell-core output, one without. Returns
    (data root, run id with cores, run id without)."""
    root = tmp_path_factory.mktemp("trained")
    project = create_demo_project(root, n_images=2, size=96)
    return (root, tiny_project_run(project, separation=True, **{"train.epochs": 20, "train.lr": 0.01}),
            tiny_project_run(project, separation=False))


@pytest.fixture
def trained_root(trained_runs, monkeypatch):
    """The trained demo project's data root as the app's, access control off."""
    serve_data_root(monkeypatch, trained_runs[0])
    return trained_runs
