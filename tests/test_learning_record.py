"""What a run records about its training data and its quality, and calibration as a step of its own."""

import io

import numpy as np
import pytest
import tifffile

from factories import tiny_config
from impartial import strokes
from impartial.calibrate import balanced_accuracy, calibrate, cells_show_stain, membrane_fills_cells
from impartial.config import whole_cell_tasks
from impartial.dataset import TrainingImage
from impartial.project import create_project
from impartial.runs import (
    Run,
    load_scribble_snapshot,
    read_quality,
    read_training_data,
    save_training_data,
    write_quality,
)
from impartial.train import Trainer


def test_balanced_accuracy_by_hand():
    probability = np.array([[0.9, 0.6, 0.2], [0.4, 0.1, 0.7]])
    positive = np.array([[True, True, False], [True, False, False]])  # 0.9, 0.6 above 0.5; 0.4 below
    negative = np.array([[False, False, True], [False, True, True]])  # 0.2, 0.1 below; 0.7 above
    assert balanced_accuracy([(probability, positive, negative)], 0.5) == pytest.approx((2 / 3 + 2 / 3) / 2)
    assert balanced_accuracy([(probability, positive, np.zeros_like(negative))], 0.5) is None


def test_the_training_data_record_counts_strokes_and_keeps_the_exact_scribbles(tmp_path):
    config = tiny_config()  # one task: cell, background
    scribbles = np.zeros((20, 20, 2), np.uint8)
    scribbles[2, 2:8, 0] = 1  # a cell stroke of 6 px
    scribbles[10:12, 10, 0] = 1  # another of 2 px
    scribbles[15, 0:5, 1] = 1  # a background stroke of 5 px
    box = np.zeros((20, 20), bool)
    box[:5, :5] = True
    dataset = [TrainingImage("a", np.zeros((2, 20, 20), np.float32), scribbles, box)]
    record = save_training_data(tmp_path, dataset, config, annotation_minutes=3.5)
    assert record["strokes"] == {"cell": 2, "background": 1} and record["pixels"] == {"cell": 8, "background": 5}
    assert record["annotation_minutes"] == 3.5
    assert read_training_data(tmp_path)["images"]["a"]["strokes"] == {"cell": 2, "background": 1}
    (kept, kept_box), = load_scribble_snapshot(tmp_path).values()
    np.testing.assert_array_equal(kept, scribbles)
    np.testing.assert_array_equal(kept_box, box)


def test_quality_figures_add_up_and_a_damaged_record_names_its_file(tmp_path):
    write_quality(tmp_path, validation_accuracy=0.9)
    assert write_quality(tmp_path, labelled={"img": {"f1": 0.5}}) == {"validation_accuracy": 0.9,
                                                                      "labelled": {"img": {"f1": 0.5}}}
    (tmp_path / "quality.json").write_text("[1, 2")
    with pytest.raises(Exception, match="quality.json"):
        read_quality(tmp_path)


def test_a_run_records_its_data_and_quality_and_calibration_can_be_rerun(small_dataset, tmp_path):
    config, dataset = small_dataset
    run = Trainer(config, dataset, tmp_path / "run", annotation_minutes=1.25).run()
    data = read_training_data(run.dir)
    assert set(data["images"]) == {item.name for item in dataset} and data["annotation_minutes"] == 1.25
    assert data["strokes"]["cell"] > 0 and data["pixels"]["background"] > 0
    quality = read_quality(run.dir)
    assert 0.0 <= quality["validation_accuracy"] <= 1.0 and 0.0 <= quality["stroke_consistency"] <= 1.0
    again = calibrate(Run.load(run.dir), Trainer(config, dataset, tmp_path / "other").dataset)
    assert again.thresholds == pytest.approx(run.thresholds)  # the same step the trainer took
    assert again.quality == pytest.approx(quality)


def test_the_run_decides_by_majority_whether_its_membrane_channel_fills_cells():
    config = tiny_config()  # membrane channel 0, nuclear channel 1
    filled = np.zeros((2, 40, 40), np.float32)
    filled[1, 10:16, 10:16] = 1.0
    filled[0, 5:20, 5:20] = 1.0
    ring = filled.copy()
    ring[0, 7:18, 7:18] = 0.0
    assert membrane_fills_cells([filled, filled, ring], config)
    assert not membrane_fills_cells([filled, ring, ring], config) and not membrane_fills_cells([], config)
    config.instances.membrane_channel = None
    assert not membrane_fills_cells([filled], config)


def test_the_run_keeps_cells_to_the_stains_only_when_its_cell_strokes_lie_in_stain():
    config = tiny_config()  # one task: cell, then background
    image = np.zeros((2, 40, 40), np.float32)
    image[1, 10:20, 10:20] = 1.0  # one stained nucleus; the rest is dark in both channels

    def dataset(*cell_strokes: tuple[int, slice]) -> list[TrainingImage]:
        scribbles = np.zeros((40, 40, 2), np.uint8)
        for row, columns in cell_strokes:
            scribbles[row, columns, 0] = 1
        return [TrainingImage("a", image, scribbles)]

    assert cells_show_stain(dataset((15, slice(11, 19))), config)
    # 20 stroke pixels, 2 in the dark: 90 % in stain, below the 95 % asked
    assert not cells_show_stain(dataset((12, slice(11, 19)), (15, slice(11, 19)), (30, slice(20, 24))), config)
    assert cells_show_stain(dataset(*[(row, slice(11, 19)) for row in range(11, 19)], (30, slice(20, 22))), config)
    assert not cells_show_stain(dataset(), config)  # no cell strokes: nothing to go by


def test_annotation_time_adds_pauses_between_edits_up_to_the_idle_limit(tmp_path, monkeypatch):
    project = create_project(tmp_path, "p", ["membrane", "nuclear"], whole_cell_tasks())
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, rng.random((2, 16, 16)).astype(np.float32))
    name = project.add_image("a.tif", buffer.getvalue())
    clock = iter([1000.0, 1030.0, 1030.0 + 600.0, 1030.0 + 600.0 + 10.0])
    monkeypatch.setattr(strokes.time, "time", lambda: next(clock))
    for step in range(4):  # pauses: -, 30 s, 600 s (a break: counts 120 s), 10 s
        project.draw_stroke(name, strokes.Stroke(((step + 0.5, 0.5),), 1.0, 0), "ann", f"op{step}")
    assert project.history(name).annotation_seconds() == pytest.approx(30 + strokes.IDLE_AFTER_S + 10)
    assert project.annotation_minutes() == pytest.approx((30 + strokes.IDLE_AFTER_S + 10) / 60)
