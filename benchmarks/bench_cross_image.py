"""Cells on images the run never trained on, beside the random forest and the labelled-foreground ceiling.

Protocols (each repeated over ``--seeds``, mean and spread printed):

- ``dense``: automatic scribbles on 20 % of the cells of one Vectra image (a stroke inside each chosen cell and
  around it), then the *other* image is predicted. image1 -> image0 is scored on all of image0's 259 cells
  (F1, AP at IoU 0.5, mAP 0.5:0.95). image0 -> image1 is scored on image1's 104 labelled cells (image1 is only
  partly labelled): recall at IoU 0.5, and precision over the predicted cells that overlap a labelled cell.
- ``sparse``: what a person draws in a minute, short strokes in 10 cells and 5 short background strokes
  (impartial.scribbles.sparse_scribbles), the same two directions and scores.
- ``demo``: three scribbled synthetic images -> two unseen ones (F1 on all cells).

Every row is printed beside the random forest on filter features trained on the same scribbles (the ilastik way,
with the nucleus-seeded watershed), the ceiling "labelled foreground + the same instance step" (the run's own
seeds, the labelled foreground), the same with the labels' 1 px gaps between touching cells closed (a foreground
that any prediction could have), and the stains alone (Otsu of each channel, no scribbles). ``cells`` is cells
found / cells labelled. ``--ablations`` adds rows with the cell-core output switched (with and without the
pretrained prior), without test-time flips, and with the method's threshold step.

    .venv/bin/python benchmarks/bench_cross_image.py [--protocols dense sparse demo] [--minutes 5]
        [--seeds 0 1 2] [--directions 1->0 0->1] [--ablations] [--vectra ../shared/data/vectra]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from impartial import instances  # noqa: E402
from impartial.baseline import RandomForestBaseline  # noqa: E402
from impartial.calibrate import cells_show_stain, membrane_fills_cells  # noqa: E402
from impartial.config import InstanceConfig, RunConfig, preset_config  # noqa: E402
from impartial.dataset import TrainingImage  # noqa: E402
from impartial.instances import combine_class_probabilities, instances_from_probabilities  # noqa: E402
from impartial.io import normalize_percentile, read_image, read_labels  # noqa: E402
from impartial.metrics import evaluate  # noqa: E402
from impartial.predict import Prediction, predict_image  # noqa: E402
from impartial.scribbles import auto_scribbles, sparse_scribbles  # noqa: E402
from impartial.stainstrokes import smoothed_stain  # noqa: E402
from impartial.synthetic import make_tissue  # noqa: E402
from impartial.train import Trainer  # noqa: E402

SCRIBBLED_FRACTION = 0.2


@dataclass
class Case:
    """Scribbled training images and labelled unseen images; ``partial`` targets are scored by recall."""

    name: str
    train: list[TrainingImage]
    targets: list[tuple[np.ndarray, np.ndarray]]  # (C, H, W) normalised image, (H, W) labels
    partial: bool


def vectra_cases(folder: Path, protocol: str, seed: int, directions: list[str]) -> list[Case]:
    images, labels = {}, {}
    for name in ("image0", "image1"):
        images[name] = normalize_percentile(read_image(folder / f"{name}.tif", n_channels=2))
        labels[name] = read_labels(folder / f"{name}_rois.zip", shape=images[name].shape[1:])
    cases = []
    for source, target in (("image1", "image0"), ("image0", "image1")):
        if f"{source[-1]}->{target[-1]}" not in directions:
            continue
        if protocol == "dense":
            scribbles, val_mask = auto_scribbles([[labels[source]]], SCRIBBLED_FRACTION, seed=seed)
        else:
            scribbles, val_mask = sparse_scribbles(labels[source], seed=seed)
        cases.append(Case(f"{protocol} {source}->{target}", [TrainingImage(source, images[source], scribbles,
                                                                             val_mask)],
                          [(images[target], labels[target])], partial=target == "image1"))
    return cases


def demo_case(seed: int) -> Case:
    train = []
    for index in range(3):
        tissue = make_tissue(256, 256, seed=seed * 10 + index)
        scribbles, val_mask = auto_scribbles([[tissue.cells]], SCRIBBLED_FRACTION, seed=seed)
        train.append(TrainingImage(f"demo_{index}", normalize_percentile(tissue.image), scribbles, val_mask))
    targets = [(normalize_percentile(tissue.image), tissue.cells)
               for tissue in (make_tissue(256, 256, seed=1000 + seed * 10 + index) for index in range(2))]
    return Case("demo 3 -> 2 unseen", train, targets, partial=False)


# --- scores -----------------------------------------------------------------------------------------------------

def scores(found: list[np.ndarray], case: Case) -> dict[str, float]:
    """Pooled over the targets: f1 / ap / map (full labels) or recall / precision (partial labels), and cells."""
    results = [evaluate(truth, cells) for cells, (_, truth) in zip(found, case.targets, strict=True)]
    tp, fp, fn = (sum(result[key] for result in results) for key in ("tp", "fp", "fn"))
    n_found = sum(int(cells.max()) for cells in found)
    n_labelled = sum(int(truth.max()) for _, truth in case.targets)
    if not case.partial:
        return {"f1": 2 * tp / max(2 * tp + fp + fn, 1), "ap": tp / max(tp + fp + fn, 1),
                "map": float(np.mean([result["map"] for result in results])), "cells": f"{n_found}/{n_labelled}"}
    overlapping = sum(len(np.setdiff1d(np.unique(cells[truth > 0]), [0]))
                      for cells, (_, truth) in zip(found, case.targets, strict=True))
    return {"recall": tp / max(tp + fn, 1), "precision": tp / max(overlapping, 1), "cells": f"{n_found}/{n_labelled}"}


def cells_of(predictions: list[Prediction], case: Case, config: InstanceConfig,
             labelled_foreground: bool = False) -> list[np.ndarray]:
    """The instance step on each target; with ``labelled_foreground`` the labels replace the cell probability."""
    found = []
    for prediction, (image, truth) in zip(predictions, case.targets, strict=True):
        cell, nucleus = combine_class_probabilities(prediction.class_probabilities())
        if labelled_foreground:
            cell = (truth > 0).astype(np.float32)
        found.append(instances_from_probabilities(cell, nucleus, image, config, core_prob=prediction.core)[0])
    return found


def cells_untrimmed(predictions: list[Prediction], case: Case, config: InstanceConfig) -> list[np.ndarray]:
    """:func:`cells_of` with no cell shedding its pixels dimmer than itself (the ablation of that step alone)."""
    share = instances._OWN_STAIN_SHARE
    instances._OWN_STAIN_SHARE = 0.0  # every pixel's stain reaches 0 times its cell's mean
    try:
        return cells_of(predictions, case, config)
    finally:
        instances._OWN_STAIN_SHARE = share


# --- models -----------------------------------------------------------------------------------------------------

def forest_rows(case: Case, run_config: RunConfig) -> dict[str, dict]:
    forest = RandomForestBaseline().fit([item.image for item in case.train],
                                        [item.scribbles for item in case.train], n_classes=1)
    # the instance step a run would take on these images (a cytoplasm stain's dark lines as borders, cells kept
    # to the stains where the cell strokes lie in them)
    config = InstanceConfig(threshold=0.5, membrane_fills_cells=membrane_fills_cells(
        [item.image for item in case.train], run_config), cells_show_stain=cells_show_stain(case.train, run_config))
    found = [instances_from_probabilities(forest.predict_proba(image)[0], None, image, config)[0]
             for image, _ in case.targets]
    labelled = [instances_from_probabilities((truth > 0).astype(np.float32), None, image, config)[0]
                for image, truth in case.targets]
    # the labels draw a 1 px gap between touching cells, which no prediction has: closed, the fair ceiling
    gapless = [instances_from_probabilities(closed_foreground(truth), None, image, config)[0]
               for image, truth in case.targets]
    stains = [instances_from_probabilities(stain_foreground(image), None, image, config)[0]
              for image, _ in case.targets]
    return {"random forest": scores(found, case), "ceiling: labels + nucleus-seeded watershed": scores(labelled, case),
            "ceiling without the labels' gaps (closed 1 px)": scores(gapless, case),
            "no scribbles: Otsu of the stains + the same step": scores(stains, case)}


def closed_foreground(truth: np.ndarray) -> np.ndarray:
    """(H, W) float32: the labelled foreground with the 1 px gaps between touching cells filled."""
    foreground = truth > 0
    return (ndimage.binary_closing(foreground) | foreground).astype(np.float32)


def stain_foreground(image: np.ndarray) -> np.ndarray:
    """(H, W) float32: above the Otsu level of any smoothed channel, the unsupervised baseline."""
    bright = [smoothed > threshold_otsu(smoothed) for smoothed in (smoothed_stain(channel) for channel in image)]
    return np.logical_or.reduce(bright).astype(np.float32)


def impartial_rows(case: Case, config: RunConfig, label: str, work: Path,
                   ablations: bool) -> dict[str, dict]:
    started = time.perf_counter()
    run = Trainer(config, case.train, work / f"{case.name}-{label}".replace(" ", "_").replace(">", "")).run()
    trained_min = (time.perf_counter() - started) / 60
    predictions = [predict_image(run, image) for image, _ in case.targets]
    settings = run.instance_config()
    thresholds = ", ".join(f"{key} {value if isinstance(value, str | bool) else round(value, 2)}"
                           for key, value in run.thresholds.items())
    print(f"  {case.name}, {label}: trained {trained_min:.1f} min, {run.status.get('epoch')} epochs; {thresholds}",
          flush=True)
    rows = {label: scores(cells_of(predictions, case, settings), case),
            f"{label}, the membrane channel's bright lines as borders even where it fills cells": scores(
                cells_of(predictions, case, dataclasses.replace(settings, membrane_fills_cells=False)), case),
            f"{label}, cells not kept to the stains": scores(
                cells_of(predictions, case, dataclasses.replace(settings, cells_show_stain=False)), case),
            f"{label}, kept to the stains but not trimmed cell by cell": scores(
                cells_untrimmed(predictions, case, settings), case),
            f"ceiling: labels + {label}'s instance step": scores(
                cells_of(predictions, case, settings, labelled_foreground=True), case)}
    if ablations:
        rows[f"{label}, method's threshold step"] = scores(
            cells_of(predictions, case, dataclasses.replace(settings, method="threshold")), case)
        unflipped = dataclasses.replace(run.config, predict=dataclasses.replace(run.config.predict, flips=False))
        run.config = unflipped
        plain = [predict_image(run, image) for image, _ in case.targets]
        rows[f"{label}, no test-time flips"] = scores(cells_of(plain, case, settings), case)
    return rows


def variants(config: RunConfig, ablations: bool) -> dict[str, RunConfig]:
    """The configuration under test, and with ``ablations`` the same with the cell-core output (with and without
    the pretrained prior) switched the other way."""
    chosen = {"ImPartial": config}
    if not ablations:
        return chosen
    if config.separation:
        return {**chosen, "without cell cores": dataclasses.replace(config, separation=False)}
    for prior in (False, True):
        chosen[f"with cell cores{', prior' if prior else ''}"] = dataclasses.replace(
            config, separation=True, train=dataclasses.replace(config.train, prior=prior))
    return chosen


# --- report -----------------------------------------------------------------------------------------------------

def summarise(rows: dict[str, list[dict]]) -> None:
    for label, results in rows.items():
        keys = [key for key in results[0] if key != "cells"]
        figures = "  ".join(f"{key} {np.mean([r[key] for r in results]):.3f}"
                            f" ± {np.std([r[key] for r in results]):.3f}" for key in keys)
        cells = ", ".join(result["cells"] for result in results)
        print(f"    {label:<60} {figures}   cells {cells}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocols", nargs="+", default=["dense", "sparse", "demo"],
                        choices=["dense", "sparse", "demo"])
    parser.add_argument("--minutes", type=float, default=5.0, help="training budget of every run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--directions", nargs="+", default=["1->0", "0->1"], choices=["1->0", "0->1"],
                        help="Vectra source -> target images")
    parser.add_argument("--ablations", action="store_true", help="also train without separation / prior")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides, e.g. separation=true train.intensity_jitter=0.3")
    parser.add_argument("--vectra", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/vectra")
    args = parser.parse_args()
    overrides = {key: json.loads(value) for key, value in (item.split("=", 1) for item in args.set)}
    config = preset_config("quick", **{"train.max_minutes": args.minutes, **overrides})
    print(f"quick preset{' with ' + ', '.join(args.set) if args.set else ''}, {args.minutes:g} min budget per run, "
          f"seeds {args.seeds}; scores at IoU 0.5")
    with tempfile.TemporaryDirectory() as work:
        for protocol in args.protocols:
            by_case: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
            for seed in args.seeds:
                seeded = dataclasses.replace(config, train=dataclasses.replace(config.train, seed=seed))
                cases = ([demo_case(seed)] if protocol == "demo"
                         else vectra_cases(args.vectra, protocol, seed, args.directions))
                for case in cases:
                    rows = forest_rows(case, seeded)
                    for label, variant in variants(seeded, args.ablations).items():
                        rows.update(impartial_rows(case, variant, label, Path(work) / f"seed{seed}", args.ablations))
                    for label, result in rows.items():
                        by_case[case.name][label].append(result)
            for name, rows in by_case.items():
                print(f"{name}")
                summarise(rows)


if __name__ == "__main__":
    main()
