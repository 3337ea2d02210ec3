"""Command line: ``impartial demo | scribbles | train | predict | evaluate``.

Flags are named like the original's (``--epochs --batch --lr --wfore --wback --wrec --wreg --ratio
--nsaves --mcdrop``); they override a ``--config`` JSON file, which overrides the ``--preset``.
Bad input ends with one line naming the file and the problem, and exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .config import PRESETS, TASK_PRESETS, RunConfig, apply_overrides, preset_config
from .errors import InputError
from .export import EXPORT_FORMATS
from .storage import write_text

# flag -> (config field, type, help)
CONFIG_FLAGS = {
    "epochs": ("train.epochs", int, "training epochs over all ensemble cycles (ignored with --max-minutes)"),
    "batch": ("train.batch", int, "patches per optimisation step"),
    "lr": ("train.lr", float, "Adam learning rate"),
    "wfore": ("train.wfore", float, "weight of the foreground scribble loss"),
    "wback": ("train.wback", float, "weight of the background scribble loss"),
    "wrec": ("train.wrec", float, "weight of the blind-spot reconstruction loss"),
    "wreg": ("train.wreg", float, "weight of the smoothness loss"),
    "ratio": ("train.ratio", float, "fraction of pixels kept per channel (1 - ratio become blind spots)"),
    "nsaves": ("train.nsaves", int, "checkpoint-ensemble cycles"),
    "patience": ("train.patience", int, "epochs without validation improvement before a cycle ends (with "
                 "--max-minutes, every cycle but the last)"),
    "patch": ("train.patch", int, "patch side in pixels"),
    "patches-per-epoch": ("train.patches_per_epoch", int, "patches sampled per epoch"),
    "max-minutes": ("train.max_minutes", float, "time budget in minutes: the run trains for all of it and "
                    "--epochs is ignored; the ensemble cycles share it, a cycle that stops improving leaving its "
                    "time to the next (0 = none: train for --epochs)"),
    "seed": ("train.seed", int, "random seed: the same seed repeats a run"),
    "device": ("train.device", str, "auto (CUDA when present), cuda, cuda:N or cpu"),
    "rec-loss": ("train.rec_loss", str, "gaussian (the method's) or mixture"),
    "preview-every": ("train.preview_every", int, "epochs between preview predictions"),
    "threads": ("train.threads", int, "CPU threads (0 = torch's default)"),
    "precision": ("train.precision", str, "auto (bfloat16 where the hardware computes it natively), float32 or "
                  "bfloat16"),
    "depth": ("model.depth", int, "U-Net depth"),
    "base": ("model.base", int, "U-Net channels at the first level"),
    "dropout": ("model.dropout", float, "dropout probability (also used for MC dropout)"),
    "mcdrop": ("predict.mcdrop", int, "MC-dropout passes per checkpoint"),
    "tile": ("predict.tile", int, "prediction tile side"),
    "overlap": ("predict.overlap", int, "overlap between prediction tiles"),
    "instances": ("instances.method", str, "watershed (nucleus-seeded) or threshold (the method's step)"),
    "threshold": ("instances.threshold", float, "cell probability threshold (default: chosen on validation)"),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.command(args)
    except InputError as error:
        print(f"impartial: error: {error}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="impartial", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="write a synthetic demo dataset (images, labels, scribbles, files.csv)")
    demo.add_argument("--out", type=Path, required=True, help="folder to write into")
    demo.add_argument("--images", type=int, default=4, help="number of images (the last is the test image)")
    demo.add_argument("--size", type=int, default=256, help="image side in pixels")
    demo.add_argument("--fraction", type=float, default=0.2, help="fraction of cells to scribble")
    demo.add_argument("--tasks", choices=sorted(TASK_PRESETS), default="whole_cell")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(command=run_demo)

    scribbles = commands.add_parser("scribbles", help="automatic scribbles from ground-truth labels")
    scribbles.add_argument("--files", type=Path, required=True, help="files.csv with image and labels columns")
    scribbles.add_argument("--out", type=Path, required=True, help="folder for scribble files and the new files.csv")
    scribbles.add_argument("--fraction", type=float, default=0.2, help="fraction of cells to scribble")
    scribbles.add_argument("--seed", type=int, default=0)
    scribbles.set_defaults(command=run_scribbles)

    train = commands.add_parser("train", help="train a run from scribbled images")
    source = train.add_mutually_exclusive_group(required=True)
    source.add_argument("--files", type=Path, help="files.csv: image, scribbles, optional labels, group")
    source.add_argument("--project", type=Path, help="a dashboard project folder (the run appears in the dashboard)")
    train.add_argument("--out", type=Path, help="run folder (default with --project: a new one in the project)")
    train.add_argument("--init-from", type=Path, help="fine-tune from this earlier run folder")
    _add_config_flags(train)
    train.set_defaults(command=run_train)

    predict = commands.add_parser("predict", help="predict images with a trained run")
    predict.add_argument("--run", type=Path, required=True, help="run folder")
    predict.add_argument("--out", type=Path, required=True, help="output folder")
    predict.add_argument("images", type=Path, nargs="+", metavar="IMAGE")
    predict.add_argument("--mcdrop", type=_positive_int, help="MC-dropout passes per checkpoint (default: the run's)")
    predict.add_argument("--formats", default=",".join(EXPORT_FORMATS),
                         help=f"comma-separated: {', '.join(EXPORT_FORMATS)} (geojson: cell outlines for QuPath)")
    slides = predict.add_argument_group(
        "whole slides", "with --workers or --scheduler each IMAGE is a slide (OME-TIFF, TIFF or OME-Zarr) predicted "
        "chunk by chunk on a Dask cluster into OUT/NAME.ome.zarr, NAME_cells.csv and NAME.geojson; a re-run resumes")
    cluster = slides.add_mutually_exclusive_group()
    cluster.add_argument("--workers", type=_positive_int, help="start a local Dask cluster of N worker processes")
    cluster.add_argument("--scheduler", metavar="tcp://HOST:PORT", help="use a running Dask scheduler")
    slides.add_argument("--chunk", type=_positive_int, default=1024, help="chunk side in pixels (default 1024)")
    slides.add_argument("--margin", type=int, default=128,
                        help="context around a chunk for the cells, more than a cell's diameter (default 128 px)")
    slides.add_argument("--threads", type=int, default=0,
                        help="torch threads per worker (default: the CPUs shared among local workers, else torch's)")
    predict.set_defaults(command=run_predict)

    evaluate = commands.add_parser("evaluate", help="score a run against ground-truth labels")
    evaluate.add_argument("--run", type=Path, required=True, help="run folder")
    evaluate.add_argument("--files", type=Path, required=True, help="files.csv with a labels column")
    evaluate.add_argument("--group", default="test", help="rows of this group (all: every row)")
    evaluate.add_argument("--instances", choices=["watershed", "threshold"], help="override the instance method")
    evaluate.add_argument("--mcdrop", type=_positive_int, help="MC-dropout passes per checkpoint (default: the run's)")
    evaluate.add_argument("--csv", type=Path, help="also write the table (per image, then the mean) to this csv")
    evaluate.set_defaults(command=run_evaluate)
    return parser


def _positive_int(text: str) -> int:
    """argparse type: an integer of at least 1 (argparse prints the one-line usage error otherwise)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="JSON config (a run's config.json works)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quick",
                        help="quick: CPU, interactive; full: the paper's settings (GPU)")
    parser.add_argument("--tasks", choices=sorted(TASK_PRESETS), help="task preset (default whole_cell)")
    parser.add_argument("--channels", nargs="+", help="channel names, in image order")
    for flag, (_, kind, text) in CONFIG_FLAGS.items():
        parser.add_argument(f"--{flag}", type=kind, help=text)


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """Preset, then config file, then flags."""
    if args.config:
        config = RunConfig.load(args.config)
        if args.tasks:
            config.tasks = TASK_PRESETS[args.tasks]()
    else:
        config = preset_config(args.preset, args.tasks or "whole_cell")
    if args.channels:
        config.channels = list(args.channels)
    overrides = {field: getattr(args, flag.replace("-", "_")) for flag, (field, _, _) in CONFIG_FLAGS.items()}
    return apply_overrides(config, {key: value for key, value in overrides.items() if value is not None}).validate()


# --- commands -------------------------------------------------------------------------------------

def run_demo(args: argparse.Namespace) -> int:
    from .demo import write_demo_dataset

    files = write_demo_dataset(args.out, n_images=args.images, size=args.size, fraction=args.fraction,
                               tasks=args.tasks, seed=args.seed)
    print(f"wrote {args.images} images and {files}")
    return 0


def run_scribbles(args: argparse.Namespace) -> int:
    from .demo import scribble_files

    files = scribble_files(args.files, args.out, fraction=args.fraction, seed=args.seed)
    print(f"wrote scribbles and {files}")
    return 0


def run_train(args: argparse.Namespace) -> int:
    from .dataset import load_training_set
    from .scribbles import missing_sides
    from .train import Trainer

    config = config_from_args(args)
    project = None
    if args.project:
        project = _open_project_folder(args.project)
        if not args.channels:
            config.channels = list(project.meta["channels"])
        if not args.tasks and not args.config:
            config.tasks = project.config_defaults().tasks
        dataset = project.training_set(config)
    else:
        if args.out is None:
            raise InputError("--out RUN_DIR is needed with --files")
        dataset = load_training_set(args.files, config)
    one_sided = missing_sides([item.scribbles for item in dataset], config)
    if one_sided:  # the dashboard refuses these too: the network cannot learn one side from nothing
        raise InputError("cannot train yet: " + " ".join(gap.message(len(config.tasks) > 1) for gap in one_sided))
    run_dir = args.out or project.new_run_dir()  # made only now: a refused training leaves no empty run behind
    with _ProgressBar() as bar:
        trainer = Trainer(config, dataset, run_dir, on_event=bar.update, init_from=args.init_from,
                          preview_image=None, annotation_minutes=project.annotation_minutes() if project else None)
        try:
            with _device_turn(project, trainer, run_dir):
                run = trainer.run()
        except KeyboardInterrupt:
            if project is not None and args.out is None and not any(Path(run_dir).iterdir()):
                Path(run_dir).rmdir()  # stopped while waiting for the device: leave no empty run behind
                print("\ninterrupted before training started: nothing to resume", file=sys.stderr)
                return 130
            # a project run gets a new folder each time unless --out names it: say how to continue this one
            again = "the same command" if args.out else f"the same command with --out {run_dir}"
            print(f"\ninterrupted: run {again} to resume", file=sys.stderr)
            return 130
    status = run.status
    print(f"{status['state']}: {status.get('message', '')}; {len(run.checkpoints)} checkpoint(s), "
          f"thresholds {run.thresholds} -> {run.dir}")
    if project is not None and run.checkpoints:
        from .learning import score_on_labelled_images
        from .results import prepare_results

        prepare_results(run, project)  # the dashboard's Results page then opens without predicting
        for name, scores in score_on_labelled_images(run, project).items():
            print(f"on labelled image {name} (not trained on): F1@0.5 {scores['f1']:.3f}, AP@0.5 {scores['ap']:.3f}")
    return 0


def _device_turn(project, trainer, run_dir: Path) -> contextlib.AbstractContextManager:
    """A project run takes its turn on the device with the dashboard's jobs; a --files run does not."""
    if project is None:
        return contextlib.nullcontext(True)
    from .devicelock import device_turn

    # the lock's description is shown to whoever waits, other users included: no project name in it
    return device_turn(project.data_root, trainer.device, "a command-line training",
                       on_wait=lambda holder: print(f"waiting for the device: {holder} holds it", file=sys.stderr))


def run_predict(args: argparse.Namespace) -> int:
    if args.workers or args.scheduler:
        return run_predict_slides(args)
    from .io import read_image
    from .pipeline import export_segmentation, segment
    from .runs import Run

    run = Run.load(args.run)
    if args.out.exists() and not args.out.is_dir():
        raise InputError("--out must be a folder, but it is a file", args.out)
    formats = tuple(name.strip() for name in args.formats.split(",") if name.strip())
    unknown = sorted(set(formats) - set(EXPORT_FORMATS))
    if unknown:
        raise InputError(f"--formats: unknown {', '.join(unknown)}; choose from {', '.join(EXPORT_FORMATS)}")
    for path in args.images:
        raw = read_image(path, n_channels=run.config.n_channels)
        segmentation = segment(run, _normalize(raw), mcdrop=args.mcdrop)
        written = export_segmentation(args.out, path.stem, raw, segmentation, run.config.channels, formats)
        print(f"{path.name}: {int(segmentation.cells.max())} cells -> {', '.join(p.name for p in written.values())}")
    return 0


def run_predict_slides(args: argparse.Namespace) -> int:
    """Slides on a Dask cluster (see impartial.slides); exit status 2 when a slide failed, after the others."""
    from tqdm import tqdm

    from .slides import dask_client, predict_slides

    if args.out.exists() and not args.out.is_dir():
        raise InputError("--out must be a folder, but it is a file", args.out)
    failed = []

    def report(result) -> None:
        if result.error:
            failed.append(result)
            tqdm.write(f"impartial: error: {result.error}", file=sys.stderr)
        else:
            summary = result.summary
            tqdm.write(f"{summary['slide']}: {summary['cells']} cells -> {summary['zarr']}, {summary['csv']}, "
                       f"{summary['geojson']}")

    with dask_client(args.scheduler, args.workers, args.threads) as (client, threads):
        results = predict_slides(client, args.run, args.images, args.out, chunk=args.chunk, margin=args.margin,
                                 mcdrop=args.mcdrop, threads=threads, on_result=report)
    if failed:
        print(f"impartial: {len(failed)} of {len(results)} slide(s) failed", file=sys.stderr)
        return 2
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from .dataset import read_files_csv
    from .io import read_image, read_labels
    from .metrics import evaluate
    from .pipeline import segment
    from .runs import Run

    run = Run.load(args.run)
    instance_config = run.instance_config()
    if args.instances:
        instance_config.method = args.instances
    table = read_files_csv(args.files)
    if args.group != "all":
        table = table[table["group"] == args.group]
    if "labels" not in table or table["labels"].isna().all() or table.empty:
        raise InputError(f"no labelled rows in group '{args.group}'", args.files)
    rows = []
    for record in table.itertuples():
        image = _normalize(read_image(record.image, n_channels=run.config.n_channels))
        labels = read_labels(record.labels, shape=image.shape[1:])
        cells = segment(run, image, instance_config, mcdrop=args.mcdrop).cells
        rows.append({"image": Path(record.image).name, **evaluate(labels, cells)})
    scores = pd.DataFrame(rows)
    columns = ["image", "f1", "precision", "recall", "ap", "map", "dice", "jaccard", "n_true", "n_pred"]
    scores = scores[[column for column in columns if column in scores]]
    mean = scores.drop(columns="image").mean(numeric_only=True)
    table = pd.concat([scores, pd.DataFrame([{"image": "mean", **mean}])])
    print(table.to_string(index=False, float_format="%.3f"))
    if args.csv:
        write_text(args.csv, table.to_csv(index=False))
    return 0


# --- helpers ----------------------------------------------------------------------------------------

def _normalize(image: np.ndarray) -> np.ndarray:
    from .io import normalize_percentile

    return normalize_percentile(image)


def _open_project_folder(folder: Path):
    from .project import open_project

    folder = folder.resolve()
    return open_project(folder.parent.parent, folder.name)


class _ProgressBar:
    """A tqdm bar fed by training events: over the epochs, or over the seconds of a time budget.

    It opens at the trainer's start event, which carries the run's own settings (a resumed run's saved ones).
    """

    def __init__(self) -> None:
        self.bar = None

    def update(self, event) -> None:
        if event.kind == "start":
            self._open(event)
        elif event.kind == "epoch":
            self.bar.n = self._position(event)
            shown = {"epoch": event.epoch} if event.budget_s else {}
            self.bar.set_postfix({**shown, **{key: f"{value:.3f}" for key, value in event.losses.items()
                                              if key in ("scribble", "rec", "val")}})
            self.bar.refresh()
        elif event.kind in ("done", "stopped", "error") and event.message:
            from tqdm import tqdm

            tqdm.write(event.message)

    def _open(self, event) -> None:
        from tqdm import tqdm

        if event.budget_s:
            self.bar = tqdm(total=round(event.budget_s), unit="s", dynamic_ncols=True,
                            bar_format="{l_bar}{bar}| {n}/{total} s of the time budget{postfix}")
        else:
            self.bar = tqdm(total=event.total_epochs, unit="epoch", dynamic_ncols=True)
        self.bar.n = self._position(event)

    def _position(self, event) -> int:
        """Seconds spent of the budget, else epochs done; never past the bar's end (an epoch may overrun)."""
        done = round(event.elapsed_s) if event.budget_s else event.epoch
        return min(done, self.bar.total)

    def __enter__(self) -> _ProgressBar:
        return self

    def __exit__(self, *exc_info) -> None:
        if self.bar is not None:
            self.bar.close()


if __name__ == "__main__":
    sys.exit(main())
