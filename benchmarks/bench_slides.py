"""Whole-slide prediction on a local Dask cluster: megapixels per second and peak memory per worker.

A synthetic 2-channel slide (uint16, tiles of the demo's tissue generator) is written as an OME-Zarr (and, with
``--tiff``, as a pyramidal tiled OME-TIFF), then predicted by ``impartial.slides.predict_slides`` with 1 and 2
local worker processes: probabilities, variance, entropy, cells, the per-cell CSV and the GeoJSON. The run is the
``quick`` preset (3 checkpoints x 4 MC-dropout passes) trained for ``--train-minutes`` on demo images, or
``--run RUN``. Peak memory is each worker process's ``ru_maxrss`` after the slide (torch included).

    .venv/bin/python benchmarks/bench_slides.py [--sizes 8192] [--workers 1 2] [--chunk 1024] [--tiff]
        [--run RUN] [--mcdrop N]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from impartial.synthetic import make_tissue  # noqa: E402

TILE = 1024
DISTINCT_TILES = 4


def tissue_tiles() -> list[np.ndarray]:
    """A few distinct (2, TILE, TILE) uint16 tissue tiles; the slide repeats them."""
    return [(np.clip(make_tissue(TILE, TILE, seed=seed).image, 0, None) * 4000).astype(np.uint16)
            for seed in range(DISTINCT_TILES)]


def tile_at(tiles: list[np.ndarray], row: int, column: int) -> np.ndarray:
    return tiles[(row * 3 + column) % len(tiles)]


def write_zarr_slide(path: Path, size: int, tiles: list[np.ndarray]) -> Path:
    """An NGFF 0.4 OME-Zarr (c, y, x) of ``size`` x ``size`` written tile by tile (never whole in memory)."""
    import zarr

    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    array = group.create_array("0", shape=(2, size, size), chunks=(1, TILE, TILE), dtype="uint16",
                               chunk_key_encoding={"name": "v2", "separator": "/"})
    for row in range(-(-size // TILE)):
        for column in range(-(-size // TILE)):
            block = tile_at(tiles, row, column)
            height, width = min(TILE, size - row * TILE), min(TILE, size - column * TILE)
            array[:, row * TILE:row * TILE + height, column * TILE:column * TILE + width] = block[:, :height, :width]
    group.attrs["multiscales"] = [{"version": "0.4", "name": "slide",
                                   "axes": [{"name": "c", "type": "channel"}, {"name": "y", "type": "space"},
                                            {"name": "x", "type": "space"}],
                                   "datasets": [{"path": "0", "coordinateTransformations": [
                                       {"type": "scale", "scale": [1.0, 1.0, 1.0]}]}]}]
    return path


def write_tiff_slide(path: Path, size: int, tiles: list[np.ndarray]) -> Path:
    """A tiled, zlib-compressed pyramidal OME-TIFF (level 0 and two 2x reductions as SubIFDs), tile by tile."""
    import tifffile

    def level_tiles(factor: int):
        side = size // factor
        for channel in range(2):
            for row in range(-(-side // TILE)):
                for column in range(-(-side // TILE)):
                    block = np.zeros((TILE, TILE), np.uint16)
                    y0, x0 = row * TILE * factor, column * TILE * factor
                    for dy in range(0, TILE * factor, TILE):
                        for dx in range(0, TILE * factor, TILE):
                            if y0 + dy >= size or x0 + dx >= size:
                                continue
                            source = tile_at(tiles, (y0 + dy) // TILE, (x0 + dx) // TILE)[channel, ::factor, ::factor]
                            block[dy // factor:(dy + TILE) // factor, dx // factor:(dx + TILE) // factor] = source
                    yield block

    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        options = {"tile": (TILE, TILE), "compression": "zlib", "photometric": "minisblack", "dtype": np.uint16}
        tif.write(level_tiles(1), shape=(2, size, size), subifds=2, metadata={"axes": "CYX"}, **options)
        for factor in (2, 4):
            tif.write(level_tiles(factor), shape=(2, size // factor, size // factor), subfiletype=1, **options)
    return path


def quick_run(folder: Path, minutes: float) -> Path:
    """The quick preset trained for ``minutes`` on three demo images (2 channels, whole cells)."""
    from impartial.config import preset_config
    from impartial.dataset import load_training_set
    from impartial.demo import write_demo_dataset
    from impartial.train import Trainer

    files = write_demo_dataset(folder / "demo", n_images=3, size=256, fraction=0.3, tasks="whole_cell", seed=0)
    config = preset_config("quick", **{"train.max_minutes": minutes})
    return Trainer(config, load_training_set(files, config), folder / "run").run().dir


def worker_peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(run: Path, slide: Path, workers: int, out: Path, chunk: int,
            mcdrop: int | None = None) -> dict[str, float]:
    from distributed import get_task_stream

    from impartial.slides import dask_client, open_slide, predict_slides

    opened = open_slide(slide)
    with dask_client(None, workers) as (client, threads):  # the local cluster `impartial predict` starts
        client.wait_for_workers(workers)
        start = time.perf_counter()
        with get_task_stream(client) as stream:
            results = predict_slides(client, run, [slide], out, chunk=chunk, mcdrop=mcdrop, threads=threads,
                                     progress=False)
        seconds = time.perf_counter() - start
        if results[0].error:
            raise SystemExit(results[0].error)
        peaks = client.run(worker_peak_mib)
    megapixels = opened.height * opened.width / 1e6
    return {"seconds": seconds, "mpx_per_s": megapixels / seconds, "cells": results[0].summary["cells"],
            "peak_mib": max(peaks.values()), "stages": stage_times(stream.data)}


def stage_times(tasks: list[dict]) -> dict[str, dict[str, float]]:
    """Per kind of task (predict, labels, cells, finish; the first part of its key): how many ran, their
    summed compute seconds, and the span from the first start to the last end (s)."""
    stages: dict[str, dict[str, float]] = {}
    for task in tasks:
        kind = task["key"].split("-")[0] if isinstance(task["key"], str) else str(task["key"][0]).split("-")[0]
        for period in task["startstops"]:
            if period["action"] != "compute":
                continue
            stage = stages.setdefault(kind, {"tasks": 0, "busy": 0.0, "start": period["start"], "stop": 0.0})
            stage["tasks"] += 1
            stage["busy"] += period["stop"] - period["start"]
            stage["start"], stage["stop"] = min(stage["start"], period["start"]), max(stage["stop"], period["stop"])
    return stages


def stage_line(stages: dict[str, dict[str, float]], wall: float, workers: int) -> str:
    """Where the time went: per stage its tasks, seconds per task and span; the workers' idle share."""
    parts = [f"{kind} {stage['tasks']} x {stage['busy'] / max(stage['tasks'], 1):.2f} s "
             f"(span {stage['stop'] - stage['start']:.0f} s)" for kind, stage in stages.items()]
    busy = sum(stage["busy"] for stage in stages.values())
    return "    " + "; ".join(parts) + f"; workers idle {1 - busy / (wall * workers):.0%} of the wall time"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[8192])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--run", type=Path, help="a trained run (default: the quick preset trained briefly)")
    parser.add_argument("--train-minutes", type=float, default=0.5)
    parser.add_argument("--mcdrop", type=int, help="MC-dropout passes per checkpoint (default: the run's)")
    parser.add_argument("--tiff", action="store_true", help="also the same slide as a pyramidal OME-TIFF")
    parser.add_argument("--keep", type=Path, help="write slides and outputs here (default: a temporary folder)")
    args = parser.parse_args()

    import torch

    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench_slides_"))
    folder.mkdir(parents=True, exist_ok=True)
    run = args.run or quick_run(folder, args.train_minutes)
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, cuda {torch.cuda.is_available()}, run {run}, "
          f"chunk {args.chunk}, MC-dropout passes per checkpoint {args.mcdrop or 'as the run'}")
    print(f"{'slide':>22} {'workers':>7} {'wall s':>8} {'Mpx/s':>7} {'cells':>8} {'peak MiB/worker':>15}")
    tiles = tissue_tiles()
    for size in args.sizes:
        slides = [write_zarr_slide(folder / f"slide_{size}.ome.zarr", size, tiles)]
        if args.tiff:
            slides.append(write_tiff_slide(folder / f"slide_{size}.ome.tif", size, tiles))
        for slide in slides:
            for workers in args.workers:
                out = folder / f"out_{slide.name}_{workers}"
                row = measure(run, slide, workers, out, args.chunk, args.mcdrop)
                kind = "OME-TIFF" if slide.suffix == ".tif" else "OME-Zarr"
                print(f"{size:>6} x {size:<6} {kind:>8} {workers:>7} {row['seconds']:>8.1f} {row['mpx_per_s']:>7.3f} "
                      f"{row['cells']:>8} {row['peak_mib']:>15.0f}", flush=True)
                print(stage_line(row["stages"], row["seconds"], workers), flush=True)


if __name__ == "__main__":
    main()
