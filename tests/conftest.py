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
