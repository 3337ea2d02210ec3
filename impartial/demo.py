"""Datasets on disk for the CLI: the synthetic demo, and automatic scribbles for labelled files."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .config import TASK_PRESETS, RunConfig
from .dataset import read_files_csv, write_files_csv
from .errors import InputError
from .export import save_label_tiff
from .io import read_image, read_labels, write_image_tiff
from .scribbles import auto_scribbles, scribble_table
from .storage import write_npz, write_text
from .synthetic import class_labels, make_tissue


def write_demo_dataset(out: str | Path, n_images: int = 4, size: int = 256, fraction: float = 0.2,
                       tasks: str = "whole_cell", seed: int = 0) -> Path:
    """Synthetic tissue images with labels and automatic scribbles; returns the written files.csv.

    Every image but the last is in group ``train`` (scribbled); the last is the ``test`` image.
    """
    if n_images < 2:
        raise InputError("the demo needs at least 2 images (train and test)")
    out = Path(out)
    config = RunConfig(tasks=TASK_PRESETS[tasks]())
    rows, table_rows = [], []
    for index in range(n_images):
        name = f"demo_{index}"
        tissue = make_tissue(size, size, seed=seed + index)
        write_image_tiff(out / "images" / f"{name}.tif", tissue.image)
        save_label_tiff(out / "labels" / f"{name}.tif", tissue.cells)
        row = {"image": out / "images" / f"{name}.tif", "labels": out / "labels" / f"{name}.tif", "scribbles": "",
               "group": "test"}
        if index < n_images - 1:
            truth = class_labels(tissue, config)
            scribbles, val_mask = auto_scribbles(truth, fraction, seed=seed + index)
            write_npz(out / "scribbles" / f"{name}.npz", scribble=scribbles, val_mask=val_mask)
            table_rows += scribble_table(name, scribbles, truth, config)
            row.update(scribbles=out / "scribbles" / f"{name}.npz", group="train")
        rows.append(row)
    write_text(out / "scribble_table.csv", pd.DataFrame(table_rows).to_csv(index=False))
    files = out / "files.csv"
    write_files_csv(files, rows)
    return files


def scribble_files(files: str | Path, out: str | Path, fraction: float = 0.2, seed: int = 0) -> Path:
    """Automatic whole-cell scribbles for every labelled row of ``files``; returns the new files.csv."""
    out = Path(out)
    table = read_files_csv(files)
    if "labels" not in table or table["labels"].isna().all():
        raise InputError("needs a labels column to scribble from", files)
    config = RunConfig()
    rows, table_rows = [], []
    for index, record in enumerate(table.itertuples()):
        row = {"image": record.image, "labels": record.labels, "scribbles": "", "group": record.group}
        if isinstance(record.labels, str) and record.labels:
            name = Path(record.image).stem
            # the image's shape, so ImageJ ROI zips (outlines without a size) can be rasterised too
            truth = [[read_labels(record.labels, shape=read_image(record.image).shape[1:])]]
            scribbles, val_mask = auto_scribbles(truth, fraction, seed=seed + index)
            path = out / "scribbles" / f"{name}.npz"
            write_npz(path, scribble=scribbles, val_mask=val_mask)
            table_rows += scribble_table(name, scribbles, truth, config)
            row["scribbles"] = str(path.resolve())
        rows.append(row)
    write_text(out / "scribble_table.csv", pd.DataFrame(table_rows).to_csv(index=False))
    new_files = out / "files.csv"
    write_files_csv(new_files, rows)
    return new_files
