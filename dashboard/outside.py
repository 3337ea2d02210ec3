"""Predicting images that are not in the project: uploaded, segmented, shown and downloaded, never stored.

The results live in the session only (a few at most), so a quick check of another image leaves the project as
it was; adding the image to the project is the user's choice.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st

from impartial.io import normalize_percentile
from impartial.pipeline import Segmentation, export_segmentation, segment
from impartial.project import Project
from impartial.runs import Run

from . import keys
from .render import composite, outline, png_bytes

RESULTS_KEY = keys.OUTSIDE_PREDICTIONS
KEPT = 4  # predictions of outside images kept per session


@dataclass
class OutsidePrediction:
    """One uploaded image segmented by a run: its raw pixels, the cells, and a PNG with their outlines."""

    name: str
    run_id: str
    raw: np.ndarray
    segmentation: Segmentation
    picture: bytes


def predict_outside(project: Project, run: Run, filename: str, data: bytes) -> OutsidePrediction:
    """Read an upload with the project's channels (InputError naming the file otherwise) and segment it."""
    raw = project.read_upload(filename, data)
    normalized = normalize_percentile(raw)
    found = segment(run, normalized)
    rgb = outline(composite(normalized, project.colors, project.contrast), found.cells, "#ffff00", 0.9)
    return OutsidePrediction(Path(filename).stem, run.dir.name, raw, found, png_bytes(rgb))


def keep(result: OutsidePrediction) -> None:
    """Remember a result in this session, newest first, dropping the oldest beyond ``KEPT``."""
    kept = [other for other in st.session_state.get(RESULTS_KEY, []) if other.name != result.name]
    st.session_state[RESULTS_KEY] = [result, *kept][:KEPT]


def kept() -> list[OutsidePrediction]:
    return st.session_state.get(RESULTS_KEY, [])


def export_bytes(result: OutsidePrediction, project: Project, kind: str) -> bytes:
    """One export format (npz, csv, tiff, roi) of an outside prediction, made when its button is pressed."""
    with tempfile.TemporaryDirectory(prefix="impartial-outside-") as folder:
        paths = export_segmentation(folder, result.name, result.raw, result.segmentation, project.channels,
                                    formats=(kind,), pixel_size_um=project.pixel_size_um)
        return paths[kind].read_bytes()
