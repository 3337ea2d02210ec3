"""The Results page through AppTest: the provisional marker of a run still training, the diagnostics of a model
that has not learned the background, and caches that follow new checkpoints and stay per project."""

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import tifffile
from streamlit.testing.v1 import AppTest

from dashboard import images
from factories import serve_data_root, tiny_project_run
from impartial.demo import create_demo_project
from impartial.runs import checkpoint_paths, read_status, write_status

APP = str(Path(__file__).resolve().parents[1] / "app.py")
TIMEOUT_S = 60


@pytest.fixture(scope="module")
def barely_trained(tmp_path_factory):
    """A demo project (data root, project folder, run id) with a run of one tiny epoch: it has not learned the
    background yet; and a longer run whose checkpoint differs."""
    root = tmp_path_factory.mktemp("results")
    project = create_demo_project(root, n_images=2, size=96)
    ids = [tiny_project_run(project, **{"train.epochs": epochs, "train.lr": 0.01}) for epochs in (1, 6)]
    return root, project.dir, *ids


@pytest.fixture
def app_root(barely_trained, monkeypatch):
    serve_data_root(monkeypatch, barely_trained[0])
    return barely_trained


def results(project: str, run_id: str) -> AppTest:
    app = AppTest.from_file(APP, default_timeout=TIMEOUT_S)
    app.session_state["project"] = project
    app.run()
    app.switch_page("views/4_Results.py").run()
    app.selectbox[0].set_value(run_id).run()
    assert not app.exception, app.exception
    return app


def infos(app: AppTest) -> list[str]:
    return [element.value for element in app.info]


def warnings(app: AppTest) -> list[str]:
    return [element.value for element in app.warning]


def entropy_spec(app: AppTest) -> str:
    """The plotly spec of the interactive entropy map (the toggle is switched on first)."""
    toggle = app.toggle(key="results-interactive-maps")
    if not toggle.value:
        toggle.set_value(True).run()
        assert not app.exception, app.exception
    (chart,) = [chart for chart in app.get("plotly_chart")
                if json.loads(chart.proto.spec)["layout"]["title"]["text"] == "Entropy (uncertainty)"]
    return chart.proto.spec


def cells_shown(app: AppTest) -> int:
    return int(re.search(r": (\d+) cells found", app.image[0].captions[0]).group(1))


def test_heat_maps_are_pictures_until_the_interactive_ones_are_asked_for(app_root):
    _, _, _, run_id = app_root
    app = results("demo", run_id)
    captions = [caption for image in app.image for caption in image.captions]
    assert any(caption.startswith("Entropy (uncertainty) (colour bar: 0 to 1)") for caption in captions)
    assert any(re.fullmatch(r"Variance: cell \(colour bar: 0 to [0-9.e-]+\)", caption) for caption in captions)
    assert not app.get("plotly_chart")
    app.toggle(key="results-interactive-maps").set_value(True).run()
    assert not app.exception, app.exception
    titles = {json.loads(chart.proto.spec)["layout"]["title"]["text"] for chart in app.get("plotly_chart")}
    assert {"Entropy (uncertainty)", "Probability: cell", "Variance: cell"} <= titles
    assert not any("(colour bar" in caption for image in app.image for caption in image.captions)


def test_a_run_still_training_is_marked_provisional(app_root):
    _, project_dir, run_id, _ = app_root
    run_dir = project_dir / "runs" / run_id
    finished = read_status(run_dir)
    try:
        write_status(run_dir, "running", epoch=1, total_epochs=40)  # this process's pid: reads as alive
        app = results("demo", run_id)
        (marker,) = [text for text in infos(app) if "Provisional" in text]
        assert f"run {run_id} is still training (epoch 1 / 40)" in marker
    finally:
        write_status(run_dir, **finished)
    app = results("demo", run_id)
    assert not any("Provisional" in text for text in infos(app))


def test_a_model_that_has_not_learned_the_background_says_so_and_suggests_strokes(app_root):
    _, _, run_id, _ = app_root
    app = results("demo", run_id)
    (advice,) = [text for text in warnings(app) if "has not learned enough yet" in text]
    assert "not yet learned the background" in advice
    assert "Draw background strokes" in advice
    assert any(link.proto.label == "Add strokes on the Scribble page" for link in app.get("page_link"))


def test_a_new_checkpoint_replaces_the_cached_prediction(app_root, tmp_path):
    _, project_dir, early, later = app_root
    checkpoint = checkpoint_paths(project_dir / "runs" / early)[0]
    kept = tmp_path / "kept.pt"
    shutil.copy2(checkpoint, kept)
    app = results("demo", early)
    before = entropy_spec(app)
    assert entropy_spec(app.run()) == before  # a rerun shows the same maps
    try:
        shutil.copyfile(checkpoint_paths(project_dir / "runs" / later)[0], checkpoint)  # training saved a better one
        assert entropy_spec(app.run()) != before
    finally:
        shutil.copy2(kept, checkpoint)
    assert entropy_spec(app.run()) == before


def test_the_kept_export_files_follow_the_slider_back_and_forth(app_root):
    # the barely trained run: its probabilities are not yet near 0 and 1, so the slider changes the cells
    root, project_dir, run_id, _ = app_root
    app = results("demo", run_id)
    labels = project_dir / "predictions" / run_id / f"{app.selectbox[1].value}_labels.tif"
    counts = {}
    for value in (0.05, 0.95, 0.05):
        app.slider(key=f"threshold-{run_id}").set_value(value).run()
        assert not app.exception, app.exception
        counts.setdefault(value, cells_shown(app))
        assert images.wait_for_exports(timeout_s=60)  # written in the background
        assert int(tifffile.imread(labels).max()) == counts[value] == cells_shown(app)
    assert counts[0.05] != counts[0.95]


def test_projects_with_the_same_names_and_file_times_never_share_cached_results(app_root):
    root, project_dir, early, later = app_root
    copy = project_dir.with_name("copy")
    shutil.copytree(project_dir, copy)  # same image names, run ids and file times
    meta = json.loads((copy / "project.json").read_text())
    (copy / "project.json").write_text(json.dumps({**meta, "name": "copy"}))
    try:
        # the copy's early run holds the later run's weights, with the early checkpoint's modification time
        checkpoint = checkpoint_paths(copy / "runs" / early)[0]
        stamp = checkpoint.stat().st_mtime_ns
        shutil.copyfile(checkpoint_paths(copy / "runs" / later)[0], checkpoint)
        os.utime(checkpoint, ns=(stamp, stamp))
        original = entropy_spec(results("demo", early))
        assert entropy_spec(results("copy", early)) != original
    finally:
        assert images.wait_for_exports(timeout_s=60)  # the writer is done with the copy's files
        shutil.rmtree(copy)


def test_the_threshold_says_what_it_yields_and_compared_runs_share_it(app_root):
    _, _, first, second = app_root
    app = results("demo", second)
    app.slider(key=f"threshold-{second}").set_value(0.3).run()
    captions = [element.value for element in app.caption]
    assert any(re.match(r"At 0\.30, \d+% of the image is foreground \(cells\); \d+ cells\.", text) for text in captions)
    app.multiselect[0].set_value([first]).run()
    assert not app.exception, app.exception
    assert any("All at cell probability threshold 0.30" in text for text in (e.value for e in app.caption))
    compared = [caption for image in app.image for caption in image.captions if caption.startswith(first)]
    assert compared and re.fullmatch(rf"{first}: \d+ cells", compared[0])


def test_a_run_says_how_it_draws_borders_and_keeps_cells_to_the_stains(app_root):
    _, project_dir, _, second = app_root
    copy = Path(project_dir) / "runs" / f"{second}-cytoplasm"
    shutil.copytree(Path(project_dir) / "runs" / second, copy)
    try:
        thresholds = json.loads((copy / "thresholds.json").read_text())
        assert thresholds["membrane_fills_cells"] is False  # the demo's membrane stain outlines its cells
        (copy / "thresholds.json").write_text(json.dumps({**thresholds, "membrane_fills_cells": True,
                                                           "cells_show_stain": True}))
        captions = [element.value for element in results("demo", copy.name).caption]
        assert any("Its channel 'membrane' stains the inside of cells" in text for text in captions)
        assert any("cells are kept to the stained pixels, each to those not much dimmer than itself" in text
                   for text in captions)
    finally:
        assert images.wait_for_exports(timeout_s=60)
        shutil.rmtree(copy)
