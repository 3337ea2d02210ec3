"""Prediction with uncertainty on large images: wall time and peak memory.

Each size runs in a fresh Python process, so its peak resident memory (``ru_maxrss``) is its own; it is read
after the prediction and again after the instance step. The run is the
``quick`` preset's: an ensemble of ``nsaves`` checkpoints (random weights; speed does not depend on them), each
with ``mcdrop`` dropout passes per tile, then the nucleus-seeded watershed. The image is synthetic tissue
tiled to the requested size.

    .venv/bin/python benchmarks/bench_predict.py [--sizes 2048 8192] [--precision auto|float32|bfloat16]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from impartial.config import preset_config  # noqa: E402
from impartial.device import compute_dtype  # noqa: E402
from impartial.instances import instances_from_probabilities  # noqa: E402
from impartial.io import normalize_percentile  # noqa: E402
from impartial.model import build_model  # noqa: E402
from impartial.predict import predict_with_models  # noqa: E402
from impartial.synthetic import make_tissue  # noqa: E402

TISSUE_SIDE = 512


def measure(size: int, precision: str) -> dict[str, float]:
    """Predict and segment one ``size`` x ``size`` 2-channel image; times in s, memory in MiB."""
    config = preset_config("quick", **{"train.precision": precision})
    tissue = normalize_percentile(make_tissue(TISSUE_SIDE, TISSUE_SIDE, seed=0).image)
    repeats = -(-size // TISSUE_SIDE)
    image = np.tile(tissue, (1, repeats, repeats))[:, :size, :size]  # a view: no second full-size copy
    del tissue
    models = []
    for seed in range(config.train.nsaves):
        torch.manual_seed(seed)
        models.append(build_model(config))
    start = time.perf_counter()
    prediction = predict_with_models(models, config, image, passes=config.predict.mcdrop)
    predicted = time.perf_counter()
    predict_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cells, _ = instances_from_probabilities(prediction.tasks[0].class_segmentation[0], None, image, config.instances)
    done = time.perf_counter()
    return {"size": size, "predict_s": predicted - start, "instances_s": done - predicted,
            "cells": int(cells.max()), "passes_per_tile": config.train.nsaves * config.predict.mcdrop,
            "predict_peak_mib": predict_peak, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 8192])
    parser.add_argument("--precision", default="auto", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the child process's size
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.precision)))
        return
    dtype = compute_dtype(args.precision, torch.device("cpu"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, quick preset, "
          f"convolutions in {str(dtype).removeprefix('torch.')}")
    print(f"{'image':>11} {'passes/tile':>11} {'predict s':>9} {'cells s':>7} {'cells':>7} "
          f"{'peak MiB, predict':>17} {'+ cells':>8}")
    for size in args.sizes:
        child = subprocess.run([sys.executable, __file__, "--one", str(size), "--precision", args.precision],
                               capture_output=True, text=True, check=True)
        row = json.loads(child.stdout.strip().splitlines()[-1])
        print(f"{size:>5} x {size:<5} {row['passes_per_tile']:>11} {row['predict_s']:>9.1f} "
              f"{row['instances_s']:>7.1f} {row['cells']:>7} {row['predict_peak_mib']:>17.0f} {row['peak_mib']:>8.0f}",
              flush=True)


if __name__ == "__main__":
    main()
