"""Training throughput of the U-Net on the CPU: forward + total_loss + backward + Adam step, in patches/s.

Measures the quick preset (depth 3, base 12, batch 16, 128 px patches, 2 channels, whole-cell task) and
variants of depth and base, each with NCHW and with ``channels_last`` (NHWC, the model's default) weights and
activations, with torch's default thread count. Blind spots are drawn once per batch as in training.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_model_speed.py [--steps 6] [--warmup 2]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from impartial.config import RunConfig, preset_config
from impartial.losses import total_loss
from impartial.model import build_model
from impartial.sampling import blind_spots

VARIANTS = [(3, 16), (3, 8), (3, 12), (3, 24), (4, 8), (4, 12), (4, 16), (4, 24)]


def patches_per_second(config: RunConfig, channels_last: bool, steps: int, warmup: int) -> float:
    """Mean training throughput over ``steps`` optimiser steps after ``warmup`` untimed ones."""
    torch.manual_seed(0)
    cfg = config.train
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model(config).use_memory_format(memory_format).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    clean = torch.rand(cfg.batch, config.n_channels, cfg.patch, cfg.patch)
    scribbles = (torch.rand(cfg.batch, config.n_scribble_channels, cfg.patch, cfg.patch) < 0.01).float()
    generator = torch.Generator().manual_seed(0)

    def step() -> None:
        corrupted, mask = blind_spots(clean, cfg.ratio, cfg.blind_radius, generator)
        optimizer.zero_grad(set_to_none=True)
        loss, _ = total_loss(model(corrupted), clean, mask, scribbles, config)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * cfg.batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average before: {os.getloadavg()}")
    print("training patches/s")
    print(f"{'depth':>5} {'base':>4} {'params':>9} {'NCHW':>10} {'NHWC (default)':>14}")
    for depth, base in VARIANTS:
        config = preset_config("quick", "whole_cell", **{"model.depth": depth, "model.base": base})
        params = sum(p.numel() for p in build_model(config).parameters())
        default = patches_per_second(config, False, args.steps, args.warmup)
        last = patches_per_second(config, True, args.steps, args.warmup)
        print(f"{depth:>5} {base:>4} {params:>9,} {default:>10.1f} {last:>14.1f}", flush=True)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
