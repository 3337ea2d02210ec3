"""The user path in two calls: ``segment(run, image)`` and ``export_segmentation(...)``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import InstanceConfig
from .export import (
    EXPORT_FORMATS,
    cell_features,
    cell_outlines,
    cell_table,
    export_file_name,
    save_cell_csv,
    save_geojson,
    save_label_tiff,
    save_prediction_npz,
    save_roi_zip,
)
from .instances import combine_class_probabilities, instances_from_probabilities
from .predict import Prediction, predict_image
from .runs import Run


@dataclass
class Segmentation:
    """A prediction with the cells (and nuclei) found in it; labels are (H, W) int32."""

    prediction: Prediction
    cells: np.ndarray
    nuclei: np.ndarray | None


def segment(run: Run, image: np.ndarray, instance_config: InstanceConfig | None = None,
            mcdrop: int | None = None) -> Segmentation:
    """Predict a normalised (C, H, W) image with the run's ensemble and turn it into cells.

    ``instance_config`` defaults to the run's settings with its validated thresholds.
    """
    prediction = predict_image(run, image, mcdrop=mcdrop)
    return segment_prediction(prediction, image, instance_config or run.instance_config())


def segment_prediction(prediction: Prediction, image: np.ndarray, config: InstanceConfig) -> Segmentation:
    """Cells (and nuclei) from an existing prediction, e.g. again with another threshold."""
    cell_probability, nucleus_probability = combine_class_probabilities(prediction.class_probabilities())
    cells, nuclei = instances_from_probabilities(cell_probability, nucleus_probability, image, config,
                                                 core_prob=prediction.core)
    return Segmentation(prediction, cells, nuclei)


def dominant_class_map(prediction: Prediction) -> np.ndarray:
    """(H, W) index of the most probable foreground class, in ``Prediction.arrays()['class_names']`` order."""
    return np.argmax(prediction.arrays()["class_segmentation"], axis=0)


def export_segmentation(out_dir: str | Path, name: str, image: np.ndarray, segmentation: Segmentation,
                        channel_names: list[str], formats: tuple[str, ...] = EXPORT_FORMATS,
                        pixel_size_um: float | None = None) -> dict[str, Path]:
    """Write the chosen formats for one image; returns the written paths by format.

    ``image`` is (C, H, W), raw or normalised: the per-cell CSV reports its mean intensities (and areas in µm²
    when the ``pixel_size_um`` is known). The GeoJSON (QuPath: File > Import objects) holds each cell's outline
    with its nucleus and the CSV's measurements.
    """
    out_dir = Path(out_dir)
    arrays = segmentation.prediction.arrays()
    paths = {kind: out_dir / export_file_name(name, kind) for kind in EXPORT_FORMATS}
    if "npz" in formats:
        save_prediction_npz(paths["npz"], instances=segmentation.cells, nuclei=segmentation.nuclei, **arrays)
    outlines = cell_outlines(segmentation.cells) if {"roi", "geojson"} & set(formats) else None
    if "csv" in formats or "geojson" in formats:
        table = cell_table(segmentation.cells, image, channel_names, uncertainty=segmentation.prediction.entropy(),
                           class_map=dominant_class_map(segmentation.prediction), class_names=arrays["class_names"],
                           pixel_size_um=pixel_size_um)
        if "csv" in formats:
            save_cell_csv(paths["csv"], table)
        if "geojson" in formats:
            save_geojson(paths["geojson"], cell_features(segmentation.cells, table, nuclei=segmentation.nuclei,
                                                           outlines=outlines))
    if "tiff" in formats:
        save_label_tiff(paths["tiff"], segmentation.cells)
    if "roi" in formats:
        save_roi_zip(paths["roi"], segmentation.cells, outlines)
    return {key: path for key, path in paths.items() if key in formats}
