"""Predicting an image that is not in the project: segmented and exported, the project left as it was."""

import io

import numpy as np
import pandas as pd
import pytest
import tifffile
from PIL import Image

from dashboard.outside import export_bytes, predict_outside
from impartial.errors import InputError
from impartial.project import Project
from impartial.runs import Run
from impartial.synthetic import make_tissue


def tiff(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array.astype(np.float32))
    return buffer.getvalue()


def test_an_outside_image_is_predicted_and_exported_without_entering_the_project(trained_runs):
    root, _, run_id = trained_runs
    project = Project(root / "projects" / "demo")
    run = Run.load(project.dir / "runs" / run_id)
    before = project.images()
    result = predict_outside(project, run, "visitor.tif", tiff(make_tissue(96, 96, seed=77).image))
    assert project.images() == before and result.name == "visitor" and result.run_id == run_id
    assert Image.open(io.BytesIO(result.picture)).size == (96, 96)
    table = pd.read_csv(io.BytesIO(export_bytes(result, project, "csv")))
    assert len(table) == int(result.segmentation.cells.max())
    with pytest.raises(InputError, match="three.tif"):
        predict_outside(project, run, "three.tif", tiff(np.ones((3, 32, 32))))
