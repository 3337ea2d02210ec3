"""Time impartial.metrics.evaluate on a 2048 x 2048 image with 3000 cells.

Ground truth is a Voronoi tessellation of 3000 random seeds; the prediction is a copy shifted by two pixels
with 5 % of its cells dropped and 5 % merged into a neighbour, so every matching path is exercised.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_metrics.py
"""

from __future__ import annotations

import time

import numpy as np
from scipy import ndimage as ndi

from impartial.metrics import evaluate


def voronoi_labels(size: int, n_cells: int, rng: np.random.Generator) -> np.ndarray:
    """(size, size) int32 labels 1..n_cells: every pixel takes the id of its nearest seed."""
    seeds = np.zeros((size, size), np.int32)
    rows, cols = rng.integers(0, size, (2, n_cells))
    seeds[rows, cols] = np.arange(1, n_cells + 1)
    # Nearest seed for each pixel from the distance transform of the non-seed pixels.
    nearest = ndi.distance_transform_edt(seeds == 0, return_distances=False, return_indices=True)
    return seeds[nearest[0], nearest[1]]


def perturbed(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A shifted copy with some cells removed and some merged into the next id."""
    shifted = np.roll(labels, (2, 2), axis=(0, 1))
    n_cells = int(labels.max())
    lookup = np.arange(n_cells + 1)
    chosen = rng.permutation(np.arange(1, n_cells))[: n_cells // 10]
    lookup[chosen[: len(chosen) // 2]] = 0
    merged = chosen[len(chosen) // 2:]
    lookup[merged] = merged + 1
    return lookup[shifted].astype(np.int32)


def main(size: int = 2048, n_cells: int = 3000, repeats: int = 3) -> None:
    rng = np.random.default_rng(0)
    gt = voronoi_labels(size, n_cells, rng)
    pred = perturbed(gt, rng)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        scores = evaluate(gt, pred)
        times.append(time.perf_counter() - start)
    print(f"{size} x {size}, {scores['n_true']} true / {scores['n_pred']} predicted cells")
    print("scores: " + ", ".join(f"{key}={value:.3f}" if isinstance(value, float) else f"{key}={value}"
                                for key, value in scores.items()))
    print(f"evaluate: best {min(times):.3f} s, mean {np.mean(times):.3f} s over {repeats} runs")


if __name__ == "__main__":
    main()
