"""The synthetic demo, as a dashboard project or as a dataset on disk for the CLI, and automatic scribbles for
labelled files."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .config import TASK_PRESETS, RunConfig, whole_cell_tasks
from .dataset import read_files_csv, write_files_csv
from .errors import InputError
from .export import save_label_tiff
from .io import read_image, read_labels, write_image_tiff
from .project import Project, create_project, open_project, projects_root
from .scribbles import auto_scribbles, scribble_table
from .storage import write_npz, write_text
from .synthetic import class_labels, make_tissue


def create_demo_project(data_root: str | Path, name: str = "demo", n_images: int = 3, size: int = 256,
                        seed: int = 0, owner: str | None = None) -> Project:
    """A ready-to-train project of synthetic tissue: images, whole-cell labels, automatic scribbles on
    ~20 % of the cells of the first two images. Opens the project instead when it exists already.
    """
    if not (projects_root(data_root) / name).exists():
        try:
            create_project(data_root, name, ["membrane", "nuclear"], whole_cell_tasks(), owner,
                           fill=lambda project: _fill_demo(project, n_images, size, seed))
        except InputError:
            if not (projects_root(data_root) / name).exists():
                raise
            # else another session finished its demo first: use that one
    return open_project(data_root, name, user=owner)


def _fill_demo(project: Project, n_images: int, size: int, seed: int) -> None:
    for index in range(n_images):
        tissue = make_tissue(size, size, seed=seed + index)
        names, errors = project.add_samples([(f"tissue_{index + 1}", tissue.image, tissue.cells)])
        if errors:
            raise errors[0]
        name = names[0]
        if index < 2:
            project.auto_scribble(name, fraction=0.2, seed=seed + index)


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
