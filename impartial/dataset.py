"""Training data: one normalised image with its scribbles (:class:`TrainingImage`), and the ``files.csv`` that
lists a data set on disk (:func:`read_files_csv`, :func:`write_files_csv`, :func:`load_training_set`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .config import RunConfig
from .errors import InputError
from .io import existing_file, normalize_percentile, read_image, read_labels, read_scribbles
from .storage import write_text

FILES_COLUMNS = ("image", "scribbles", "labels", "group")
METHOD_FILES_COLUMNS = ("prefix", "input_file", "input_dir")
GROUPS = ("train", "test")


@dataclass
class TrainingImage:
    """One image ready for training.

    Attributes:
        name: shown in messages and used for output file names.
        image: (C, H, W) float32, normalised per channel.
        scribbles: (H, W, S) uint8 0/1 in the method's layout (per task: classes, then background).
        val_mask: (H, W) bool, the held-out validation box; None = no validation pixels.
        labels: (H, W) int32 whole-cell instances for evaluation, if known.
    """

    name: str
    image: np.ndarray
    scribbles: np.ndarray
    val_mask: np.ndarray | None = None
    labels: np.ndarray | None = None

    def check(self, n_channels: int, n_scribble_channels: int) -> TrainingImage:
        """Raise InputError (naming this image) when shapes disagree with the config. Returns self."""
        channels, height, width = self.image.shape
        if channels != n_channels:
            raise InputError(f"has {channels} channel(s), the project expects {n_channels}", self.name)
        if self.scribbles.shape != (height, width, n_scribble_channels):
            raise InputError(f"scribbles have shape {self.scribbles.shape}, expected "
                             f"{(height, width, n_scribble_channels)}", self.name)
        for label, array in (("validation mask", self.val_mask), ("labels", self.labels)):
            if array is not None and array.shape != (height, width):
                raise InputError(f"{label} have shape {array.shape}, expected {(height, width)}", self.name)
        return self


# --- files.csv ---------------------------------------------------------------------------------

def read_files_csv(path: str | Path) -> pd.DataFrame:
    """Read a files.csv listing the images of a data set.

    Columns: ``image`` (required), ``scribbles`` (required on train rows), ``labels`` (optional), ``group``
    (``train`` or ``test``, default ``train``); other columns are kept. Paths are resolved against the csv's
    folder and must exist; blank optional paths are missing values (test with ``pandas.isna``).

    Raises:
        InputError: unreadable csv, missing ``image`` column, unknown group or missing file, naming the row.
    """
    path = existing_file(path)
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read the csv: {error}", path) from error
    if "image" not in table:
        raise InputError(f"needs an 'image' column (found: {', '.join(table.columns) or 'none'})", path)
    table = table.copy()
    for column in ("scribbles", "labels"):
        if column not in table:
            table[column] = ""
    if "group" not in table:
        table["group"] = "train"
    table["group"] = table["group"].str.strip().replace("", "train")
    for row, record in enumerate(table.itertuples(index=False), start=1):
        _check_files_row(record, row, path)
    for column in ("image", "scribbles", "labels"):
        table[column] = [_resolve(value, path.parent) for value in table[column]]
    return table


def _check_files_row(record, row: int, csv_path: Path) -> None:
    if record.group not in GROUPS:
        raise InputError(f"row {row}: group '{record.group}' must be 'train' or 'test'", csv_path)
    if not record.image.strip():
        raise InputError(f"row {row}: no image", csv_path)
    if record.group == "train" and not record.scribbles.strip():
        raise InputError(f"row {row}: a training image needs a scribbles file", csv_path)
    for column in ("image", "scribbles", "labels"):
        file = _resolve(getattr(record, column), csv_path.parent)
        if file is not None and not Path(file).is_file():
            raise InputError(f"row {row}: {column} file not found: {file}", csv_path)


def _resolve(value: str, folder: Path) -> str | None:
    value = value.strip()
    return str((folder / value).resolve()) if value else None


def write_files_csv(path: str | Path, rows: list[dict]) -> None:
    """Atomically write a files.csv that :func:`read_files_csv` reads back.

    Each row needs ``image`` and may have ``scribbles``, ``labels`` and ``group`` (default ``train``). Paths inside
    the csv's folder are written relative to it. The method's columns ``prefix``, ``input_file`` and
    ``input_dir`` are written too, so its tools can read the file.
    """
    path = Path(path)
    folder = path.parent.resolve()
    records = []
    for row in rows:
        image = _relative(row["image"], folder)
        record = {"image": image, "scribbles": _relative(row.get("scribbles"), folder),
                  "labels": _relative(row.get("labels"), folder), "group": row.get("group") or "train",
                  "prefix": Path(image).stem, "input_file": Path(image).name, "input_dir": str(Path(image).parent)}
        records.append(record)
    table = pd.DataFrame(records, columns=[*FILES_COLUMNS, *METHOD_FILES_COLUMNS])
    write_text(path, table.to_csv(index=False))


def _relative(file: str | Path | None, folder: Path) -> str:
    if file is None or str(file) == "":
        return ""
    file = Path(file).resolve()
    return file.relative_to(folder).as_posix() if file.is_relative_to(folder) else str(file)


def load_training_set(files: Path, config: RunConfig) -> list[TrainingImage]:
    """The ``train`` rows of a files.csv as normalised training images."""
    table = read_files_csv(files)
    table = table[table["group"] == "train"]
    if table.empty:
        raise InputError("no rows with group 'train'", files)
    dataset = []
    for record in table.itertuples():
        image = normalize_percentile(read_image(record.image, n_channels=config.n_channels))
        scribbles, val_mask = read_scribbles(record.scribbles, config, image.shape[1:])
        labels = None
        if "labels" in table and isinstance(record.labels, str) and record.labels:
            labels = read_labels(record.labels, shape=image.shape[1:])
        dataset.append(TrainingImage(Path(record.image).stem, image, scribbles, val_mask, labels))
    return dataset
