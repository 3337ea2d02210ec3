"""Do the suggestions pay? A simulated annotator scribbles where "Scribble here next" points versus at random places.

Both strategies start from the same few strokes (3 cells, 2 background: impartial.scribbles.sparse_scribbles) on
one image, then add ``--per-round`` strokes per round, one per suggested region (its centre) or per random point,
drawn as a person would answer (impartial.scribbles.strokes_at: a piece of the cell's skeleton, or of the background
band). After each round the run is fine-tuned from the previous one for ``--epochs`` epochs and scored on images it
never saw (F1 at IoU 0.5; on Vectra, whose image1 is only partly labelled, recall at IoU 0.5 on its labelled cells).
Each row has the random forest trained on the same strokes and the labelled-foreground ceiling beside it. On Vectra
the annotator scribbles image0, whose cells are all labelled: on a partly labelled image a stroke asked for inside
an unlabelled cell would be drawn as background.

    .venv/bin/python benchmarks/bench_suggestions.py --quick          # the demo only, a few minutes
    .venv/bin/python benchmarks/bench_suggestions.py --vectra ../shared/data/vectra [--skip-demo]

Beside the mean curves the table gives the paired difference (suggested - random, the same seed) with its standard
error over seeds, and ``--noise-floor K`` retrains the start strokes of each seed with K other training seeds: the
spread of one training on the same strokes, against which a difference between the strategies is to be read.

Ends with ``suggested: N strokes to reach F1 F; random: M strokes`` (F: the random strategy's final score).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from impartial.baseline import RandomForestBaseline  # noqa: E402
from impartial.config import InstanceConfig, RunConfig, preset_config  # noqa: E402
from impartial.dataset import TrainingImage  # noqa: E402
from impartial.instances import instances_from_probabilities  # noqa: E402
from impartial.io import normalize_percentile, read_image, read_labels  # noqa: E402
from impartial.metrics import evaluate  # noqa: E402
from impartial.pipeline import segment, segment_prediction  # noqa: E402
from impartial.predict import predict_image  # noqa: E402
from impartial.runs import Run  # noqa: E402
from impartial.scribbles import sparse_scribbles, strokes_at, validation_box  # noqa: E402
from impartial.suggest import gain_maps, suggest_regions  # noqa: E402
from impartial.synthetic import make_tissue  # noqa: E402
from impartial.train import Trainer  # noqa: E402

REGION = 32  # side of a suggested region, about a cell or two


@dataclass
class Dataset:
    name: str
    image: np.ndarray  # (C, H, W) normalised: the image that is scribbled
    cells: np.ndarray  # its labels: the simulated annotator's knowledge
    targets: list[tuple[np.ndarray, np.ndarray]]  # unseen (image, labels)
    partial: bool = False  # the targets' labels cover only some cells: scored by recall, not F1

    @property
    def measure(self) -> str:
        return "recall" if self.partial else "F1"


def demo_dataset(seed: int) -> Dataset:
    tissue = make_tissue(256, 256, seed=seed)
    targets = [(normalize_percentile(t.image), t.cells) for t in (make_tissue(256, 256, seed=1000 + seed + k)
                                                                   for k in range(2))]
    return Dataset("demo", normalize_percentile(tissue.image), tissue.cells, targets)


def vectra_dataset(folder: Path) -> Dataset:
    images = {name: normalize_percentile(read_image(folder / f"{name}.tif", n_channels=2))
              for name in ("image0", "image1")}
    labels = {name: read_labels(folder / f"{name}_rois.zip", shape=image.shape[1:]) for name, image in images.items()}
    return Dataset("vectra image0 -> image1", images["image0"], labels["image0"],
                   [(images["image1"], labels["image1"])], partial=True)


def score_on(data: Dataset, cells: list[np.ndarray]) -> float:
    """F1 at IoU 0.5 pooled over the targets, or with partial labels the recall of the labelled cells."""
    results = [evaluate(truth, found) for found, (_, truth) in zip(cells, data.targets, strict=True)]
    tp, fp, fn = (sum(result[key] for result in results) for key in ("tp", "fp", "fn"))
    return tp / max(tp + fn, 1) if data.partial else 2 * tp / max(2 * tp + fp + fn, 1)


def run_score(data: Dataset, run: Run) -> float:
    """:func:`score_on` the cells the run finds in the unseen images."""
    return score_on(data, [segment(run, image).cells for image, _ in data.targets])


def forest_score(data: Dataset, scribbles: np.ndarray) -> float:
    forest = RandomForestBaseline().fit([data.image], [scribbles], n_classes=1)
    config = InstanceConfig(threshold=0.5)
    return score_on(data, [instances_from_probabilities(forest.predict_proba(image)[0], None, image, config)[0]
                           for image, _ in data.targets])


def ceiling_score(data: Dataset) -> float:
    config = InstanceConfig(threshold=0.5)
    return score_on(data, [instances_from_probabilities((truth > 0).astype(np.float32), None, image, config)[0]
                           for image, truth in data.targets])


def suggested_points(run: Run, data: Dataset, scribbles: np.ndarray, count: int) -> list[tuple[int, int]]:
    prediction = predict_image(run, data.image)
    cells = segment_prediction(prediction, data.image, run.instance_config()).cells
    variance = prediction.tasks[0].class_segmentation_variance.sum(axis=0)
    picks = suggest_regions(gain_maps(prediction.entropy(), variance, cells), scribbles, count=count, size=REGION)
    return [(pick.top + pick.size // 2, pick.left + pick.size // 2) for pick in picks]


def random_points(data: Dataset, count: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    height, width = data.cells.shape
    return [(int(rng.integers(height)), int(rng.integers(width))) for _ in range(count)]


def fine_tune(config: RunConfig, data: Dataset, scribbles: np.ndarray, val_box: np.ndarray, work: Path,
              previous: Run | None) -> Run:
    item = TrainingImage(data.name, data.image, scribbles, val_box)
    folder = work / f"round_{len(list(work.iterdir()))}"
    return Trainer(config, [item], folder, init_from=None if previous is None else previous.dir).run()


def strategy(name: str, data: Dataset, config: RunConfig, start: np.ndarray, rounds: int, per_round: int,
             seed: int, work: Path) -> list[tuple[int, float, float]]:
    """(strokes drawn, score on unseen images, forest score) after the start and after each round."""
    rng = np.random.default_rng(seed)
    scribbles, drawn = start.copy(), 5
    # the held-out box stays where the first strokes put it, as a project stores it: were it chosen anew each
    # round (where strokes are densest) it would swallow the strokes just added where the suggestions cluster
    val_box = validation_box(start, config.train.val_fraction)
    work.mkdir(parents=True)
    run = fine_tune(config, data, scribbles, val_box, work, None)
    rows = [(drawn, run_score(data, run), forest_score(data, scribbles))]
    for _ in range(rounds):
        points = (suggested_points(run, data, scribbles, per_round) if name == "suggested"
                  else random_points(data, per_round, rng))
        scribbles |= strokes_at(data.cells, points)
        drawn += len(points)
        run = fine_tune(config, data, scribbles, val_box, work, run)
        rows.append((drawn, run_score(data, run), forest_score(data, scribbles)))
        print(f"  {name}: {drawn} strokes, {data.measure} {rows[-1][1]:.3f} (forest {rows[-1][2]:.3f})", flush=True)
    return rows


def noise_floor(data: Dataset, config: RunConfig, start: np.ndarray, repeats: int, work: Path) -> list[float]:
    """Scores of the start strokes trained ``repeats`` times, each with another training seed (patches, blind
    spots, initial weights) than the strategies' own."""
    val_box = validation_box(start, config.train.val_fraction)
    work.mkdir(parents=True)
    scores = []
    for offset in range(1, repeats + 1):
        reseeded = dataclasses.replace(config, train=dataclasses.replace(config.train, seed=config.train.seed + offset))
        run = fine_tune(reseeded, data, start, val_box, work, None)
        scores.append(run_score(data, run))
    return scores


def paired_differences(suggested: list[list[tuple[int, float, float]]],
                       random: list[list[tuple[int, float, float]]]) -> list[tuple[float, float]]:
    """Per row, the mean over seeds of (suggested - random) and its standard error (0 with one seed)."""
    differences = np.array([[s[1] - r[1] for s, r in zip(rows_s, rows_r, strict=True)]
                            for rows_s, rows_r in zip(suggested, random, strict=True)])  # (seeds, rows)
    errors = (differences.std(axis=0, ddof=1) / np.sqrt(len(differences)) if len(differences) > 1
              else np.zeros(differences.shape[1]))
    return list(zip(differences.mean(axis=0).tolist(), errors.tolist(), strict=True))


def strokes_to_reach(rows: list[tuple[int, float, float]], target: float) -> int | None:
    return next((strokes for strokes, f1, _ in rows if f1 >= target), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the demo only, fewer rounds")
    parser.add_argument("--vectra", type=Path, help="folder with image0/1.tif and their _rois.zip")
    parser.add_argument("--skip-demo", action="store_true", help="with --vectra: Vectra only")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--per-round", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs per round")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="repeats (start strokes, random points)")
    parser.add_argument("--prior", action="store_true", help="start from the pretrained prior (train.prior)")
    parser.add_argument("--noise-floor", type=int, default=0, metavar="K",
                        help="retrain each seed's start strokes with K other training seeds")
    args = parser.parse_args()
    rounds = args.rounds or (4 if args.quick else 8)
    epochs = args.epochs or (4 if args.quick else 8)
    config = preset_config("quick")
    config.train = dataclasses.replace(config.train, epochs=epochs, nsaves=1, patches_per_epoch=128,
                                       prior=args.prior)
    started = time.perf_counter()
    summary = []
    makers = [] if args.skip_demo and args.vectra else [demo_dataset]
    for make in makers + ([lambda seed: vectra_dataset(args.vectra)] if args.vectra and not args.quick else []):
        runs = {"suggested": [], "random": []}
        floor = []
        for seed in args.seeds:
            data = make(seed)
            start, _ = sparse_scribbles(data.cells, n_cells=3, n_background=2, seed=seed)
            print(f"{data.name}, seed {seed}: ceiling (labelled foreground + the same instance step) {data.measure} "
                  f"{ceiling_score(data):.3f}", flush=True)
            with tempfile.TemporaryDirectory() as folder:
                for name in runs:
                    runs[name].append(strategy(name, data, config, start, rounds, args.per_round, seed,
                                               Path(folder) / name))
                if args.noise_floor:
                    start_score = runs["random"][-1][0][1]  # the strategies' own training of the start strokes
                    scores = [start_score, *noise_floor(data, config, start, args.noise_floor, Path(folder) / "noise")]
                    print(f"  the start strokes, {len(scores)} training seeds: {data.measure} "
                          + ", ".join(f"{score:.3f}" for score in scores), flush=True)
                    floor.append(float(np.std(scores, ddof=1)))
        mean = {name: [(rows[0][0], float(np.mean([r[1] for r in rows])), float(np.mean([r[2] for r in rows])))
                       for rows in zip(*results, strict=True)] for name, results in runs.items()}
        print(f"\n{data.name}, mean over seeds {args.seeds}")
        print(f"| strokes | suggested {data.measure} | random {data.measure} | suggested - random (se) | "
              "forest (suggested strokes) | forest (random) |")
        print("|---|---|---|---|---|---|")
        for (strokes, f1_s, forest_s), (_, f1_r, forest_r), (difference, error) in zip(
                mean["suggested"], mean["random"], paired_differences(runs["suggested"], runs["random"]), strict=True):
            print(f"| {strokes} | {f1_s:.3f} | {f1_r:.3f} | {difference:+.3f} ({error:.3f}) | {forest_s:.3f} | "
                  f"{forest_r:.3f} |")
        if floor:
            print(f"one training's spread on the same strokes (sd over {args.noise_floor + 1} training seeds, mean "
                  f"over scribble seeds): {data.measure} {np.mean(floor):.3f}")
        target = mean["random"][-1][1]
        summary.append((data.name, data.measure, strokes_to_reach(mean["suggested"], target), target,
                        mean["random"][-1][0], strokes_to_reach(mean["random"], target)))
    print(f"\n{time.perf_counter() - started:.0f} s in all")
    for name, measure, suggested, target, random_final, random_reached in summary:
        reached = f"{suggested} strokes" if suggested is not None else f"not within {random_final} strokes"
        print(f"{name} - suggested: {reached} to reach {measure} {target:.3f}; random: {random_reached} strokes "
              f"(of {random_final})")


if __name__ == "__main__":
    main()
