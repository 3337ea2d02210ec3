"""Shared test settings: small, deterministic, CPU-friendly."""

import os

import torch

# Tests run beside other work on small machines; one thread keeps them predictable.
torch.set_num_threads(int(os.environ.get("IMPARTIAL_TEST_THREADS", "1")))
