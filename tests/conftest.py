"""Shared test settings: small, deterministic, CPU-friendly."""

import os

import pytest
import torch

from factories import scribbled_images, tiny_config

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
