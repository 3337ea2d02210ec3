"""Segmentation quality against training time, beside the random-forest baseline (the ilastik approach).

For each data set, scribbles are made automatically on about 20 % of the cells. ImPartial (``quick`` preset)
trains for 2 minutes, then is fine-tuned for 3 more and 5 more, so the rows after 2, 5 and 10 minutes are one
continued training (the dashboard's iterative loop). After each step the evaluation images are predicted with MC
dropout over the checkpoint ensemble and turned into cells two ways: the nucleus-seeded watershed (the default)
and the method's own threshold + connected components. The baseline is a random forest on filter-bank features
trained on the same scribbled pixels, with the same two instance steps at probability 0.5.

Data sets:
- ``demo``: the dashboard's synthetic tissue; trains on 3 images of 256 x 256, evaluated on 2 unseen images.
- ``vectra``: ``image0.tif`` of the shared Vectra data, scribbled on 20 % of its 259 cells and evaluated on all.

    .venv/bin/python benchmarks/bench_segmentation.py [--datasets demo vectra] [--minutes 2 3 5]
        [--vectra ../shared/data/vectra]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from impartial.baseline import RandomForestBaseline  # noqa: E402
from impartial.config import RunConfig, preset_config  # noqa: E402
from impartial.dataset import TrainingImage  # noqa: E402
from impartial.instances import instances_from_probabilities  # noqa: E402
from impartial.io import normalize_percentile, read_image, read_labels  # noqa: E402
from impartial.metrics import evaluate  # noqa: E402
from impartial.pipeline import segment_prediction  # noqa: E402
from impartial.predict import predict_image  # noqa: E402
from impartial.scribbles import auto_scribbles  # noqa: E402
from impartial.synthetic import class_labels, make_tissue  # noqa: E402
from impartial.train import Trainer  # noqa: E402

SCRIBBLED_FRACTION = 0.2
METHODS = ("watershed", "threshold")


@dataclass
class Benchmark:
    """Scribbled training images and labelled evaluation images ((C, H, W) normalised, (H, W) cells)."""

    name: str
    train: list[TrainingImage]
    evaluation: list[tuple[np.ndarray, np.ndarray]]


def demo_benchmark(config: RunConfig) -> Benchmark:
    train = []
    for seed in range(3):
        tissue = make_tissue(256, 256, seed=seed)
        scribbles, val_mask = auto_scribbles(class_labels(tissue, config), SCRIBBLED_FRACTION, seed=seed)
        train.append(TrainingImage(f"demo_{seed}", normalize_percentile(tissue.image), scribbles, val_mask))
    evaluation = [(normalize_percentile(tissue.image), tissue.cells)
                  for tissue in (make_tissue(256, 256, seed=seed) for seed in (100, 101))]
    return Benchmark("demo", train, evaluation)


def vectra_benchmark(folder: Path) -> Benchmark:
    image = normalize_percentile(read_image(folder / "image0.tif", n_channels=2))
    cells = read_labels(folder / "image0_rois.zip", shape=image.shape[1:])
    scribbles, val_mask = auto_scribbles([[cells]], SCRIBBLED_FRACTION, seed=0)
    return Benchmark("vectra", [TrainingImage("image0", image, scribbles, val_mask)], [(image, cells)])


def scores(segmentations: list[np.ndarray], evaluation: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """F1 and AP at IoU 0.5 and mAP, over all evaluation images pooled by their matched counts."""
    results = [evaluate(truth, cells) for cells, (_, truth) in zip(segmentations, evaluation, strict=True)]
    tp, fp, fn = (sum(result[key] for result in results) for key in ("tp", "fp", "fn"))
    return {"f1": 2 * tp / (2 * tp + fp + fn), "ap": tp / (tp + fp + fn),
            "map": float(np.mean([result["map"] for result in results])), "cells": tp + fn}


def report(name: str, trained: str, method: str, result: dict[str, float]) -> None:
    print(f"{name:>7} {trained:>8} {method:>26} {result['f1']:>6.3f} {result['ap']:>6.3f} {result['map']:>6.3f}",
          flush=True)


def run_baseline(benchmark: Benchmark, config: RunConfig) -> None:
    started = time.perf_counter()
    forest = RandomForestBaseline().fit([item.image for item in benchmark.train],
                                        [item.scribbles for item in benchmark.train], n_classes=1)
    probabilities = [forest.predict_proba(image)[0] for image, _ in benchmark.evaluation]
    seconds = time.perf_counter() - started
    for method in METHODS:
        instance_config = replace(config.instances, method=method, threshold=0.5)
        cells = [instances_from_probabilities(probability, None, image, instance_config)[0]
                 for probability, (image, _) in zip(probabilities, benchmark.evaluation, strict=True)]
        report(benchmark.name, f"{seconds:.0f} s", f"random forest, {method}", scores(cells, benchmark.evaluation))


def run_impartial(benchmark: Benchmark, config: RunConfig, steps: list[float], work: Path) -> None:
    earlier, trained = None, 0.0
    for index, minutes in enumerate(steps):
        run_dir = work / f"{benchmark.name}_{index}"
        step_config = replace(config, train=replace(config.train, max_minutes=minutes))
        run = Trainer(step_config, benchmark.train, run_dir, init_from=earlier).run()
        trained += run.status["elapsed_s"] / 60  # the actual time: a step's last epoch may overrun its budget
        predictions = [predict_image(run, image) for image, _ in benchmark.evaluation]
        for method in METHODS:
            instance_config = replace(run.instance_config(), method=method)
            cells = [segment_prediction(prediction, image, instance_config).cells
                     for prediction, (image, _) in zip(predictions, benchmark.evaluation, strict=True)]
            report(benchmark.name, f"{trained:.1f} min", f"ImPartial, {method}", scores(cells, benchmark.evaluation))
        earlier = run_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["demo", "vectra"], choices=["demo", "vectra"])
    parser.add_argument("--minutes", type=float, nargs="+", default=[2, 3, 5],
                        help="training minutes of each step (cumulative rows)")
    parser.add_argument("--vectra", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/vectra")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides, e.g. model.base=8 train.precision=float32")
    args = parser.parse_args()
    overrides = {key: _value(value) for key, value in (item.split("=", 1) for item in args.set)}
    config = preset_config("quick", **overrides)  # each step's budget, not the preset's epochs, sets its length
    print(f"quick preset{' with ' + ', '.join(args.set) if args.set else ''}")
    print(f"scribbles on {SCRIBBLED_FRACTION:.0%} of the cells; scores at IoU 0.5 pooled over evaluation images")
    print(f"{'data':>7} {'trained':>8} {'model, instance step':>26} {'F1':>6} {'AP':>6} {'mAP':>6}")
    with tempfile.TemporaryDirectory() as work:
        for name in args.datasets:
            benchmark = demo_benchmark(config) if name == "demo" else vectra_benchmark(args.vectra)
            run_baseline(benchmark, config)
            run_impartial(benchmark, config, args.minutes, Path(work))


def _value(text: str):
    """A number or boolean when the text is one, else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


if __name__ == "__main__":
    main()
