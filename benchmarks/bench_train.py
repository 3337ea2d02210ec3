"""Training speed through the real Trainer on the demo data: patches/s and time to the first preview.

"Pressing Start" is timed from building the Trainer (as the dashboard's job does) to the first preview event,
which is the prediction of a whole 256 x 256 demo image after the first epoch. Throughput counts the patches of
every epoch over the time between epoch events (sampling, blind spots, forward, losses, backward, Adam and
validation included).

    .venv/bin/python benchmarks/bench_train.py [--epochs 6] [--preset quick] [--threads 0]
        [--precision auto|float32|bfloat16]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from impartial.config import preset_config  # noqa: E402
from impartial.dataset import TrainingImage  # noqa: E402
from impartial.io import normalize_percentile  # noqa: E402
from impartial.scribbles import auto_scribbles  # noqa: E402
from impartial.synthetic import class_labels, make_tissue  # noqa: E402
from impartial.train import Trainer, TrainingEvent  # noqa: E402


def demo_training_set(config, n_images: int = 3, size: int = 256, fraction: float = 0.2) -> list[TrainingImage]:
    """The dashboard demo's training images: synthetic tissue with scribbles on ``fraction`` of the cells."""
    images = []
    for seed in range(n_images):
        tissue = make_tissue(size, size, seed=seed)
        scribbles, val_mask = auto_scribbles(class_labels(tissue, config), fraction, seed=seed)
        images.append(TrainingImage(f"demo_{seed}", normalize_percentile(tissue.image), scribbles, val_mask))
    return images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--precision", default="auto", choices=["auto", "float32", "bfloat16"])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = preset_config(args.preset, **{"train.epochs": args.epochs, "train.precision": args.precision})
    dataset = demo_training_set(config)
    times: dict[str, list[float]] = {"epoch": [], "preview": []}
    with tempfile.TemporaryDirectory() as run_dir:
        pressed = time.perf_counter()

        def record(event: TrainingEvent) -> None:
            if event.kind in times:
                times[event.kind].append(time.perf_counter() - pressed)

        trainer = Trainer(config, dataset, run_dir, on_event=record, preview_image=dataset[0].image)
        trainer.run()
    train = config.train
    epoch_ends = times["epoch"]
    # the first epoch pays for warm-up; later gaps include a preview every preview_every epochs
    steady = (len(epoch_ends) - 1) * train.patches_per_epoch / (epoch_ends[-1] - epoch_ends[0])
    print(f"device: {trainer.device}, torch threads: {torch.get_num_threads()}, "
          f"convolutions in {str(trainer.compute_dtype).removeprefix('torch.')}")
    print(f"preset {args.preset}: depth {config.model.depth}, base {config.model.base}, patch {train.patch}, "
          f"batch {train.batch}, {train.patches_per_epoch} patches per epoch")
    print(f"first epoch done after     {epoch_ends[0]:6.1f} s")
    print(f"first preview after        {times['preview'][0]:6.1f} s  (Start -> preview of a 256 x 256 image)")
    print(f"training throughput        {steady:6.1f} patches/s (epochs 2..{len(epoch_ends)}, with validation "
          f"and previews)")


if __name__ == "__main__":
    main()
