"""Dashboard logic without a browser: numpy helpers against hand-computed values, pages through AppTest."""

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from streamlit.testing.v1 import AppTest

from dashboard import images
from dashboard.render import LEGEND_GAP, LEGEND_HEIGHT, MAX_PICTURE_SIDE, colormap, composite, heat_picture
from dashboard.training import epoch_count, progress_fraction
from factories import serve_data_root
from impartial.config import RunConfig
from impartial.demo import create_demo_project
from impartial.project import open_project
from impartial.runs import Run

APP = str(Path(__file__).resolve().parents[1] / "app.py")
TIMEOUT_S = 60  # the first run imports torch and builds the demo


# --- numpy helpers ------------------------------------------------------------------------------

def test_composite_adds_channel_colours_with_contrast():
    image = np.stack([np.array([[0.0, 1.0]]), np.array([[1.0, 0.0]])]).astype(np.float32)  # (2, 1, 2)
    rgb = composite(image, ["#00ff00", "#0000ff"], [[0.0, 100.0], [0.0, 100.0]])
    assert rgb.tolist() == [[[0, 0, 255], [0, 255, 0]]]


def test_a_heat_picture_is_the_coloured_map_above_its_colour_bar():
    values = np.array([[0.0, 2.0], [1.0, 2.0]], np.float32)
    picture = heat_picture(values, 2.0, "Magma")
    assert picture.shape == (2 + LEGEND_GAP + LEGEND_HEIGHT, 2, 3)
    np.testing.assert_array_equal(picture[:2], colormap(values / 2.0, colorscale="Magma"))
    assert not picture[2:2 + LEGEND_GAP].any()  # a black gap
    bar = picture[2 + LEGEND_GAP:]
    np.testing.assert_array_equal(bar[:, 0], colormap(np.zeros(LEGEND_HEIGHT), colorscale="Magma"))  # 0 at the left
    np.testing.assert_array_equal(bar[:, 1], colormap(np.ones(LEGEND_HEIGHT), colorscale="Magma"))  # the top: right


def test_a_large_heat_picture_is_subsampled():
    side = MAX_PICTURE_SIDE * 2 + 1  # every third pixel: 683 rows of 2049, 3 columns of 9
    assert heat_picture(np.zeros((side, 9), np.float32), 1.0, "Viridis").shape == (
        683 + LEGEND_GAP + LEGEND_HEIGHT, 3, 3)


# --- pages --------------------------------------------------------------------------------------

def open_page(page: str | None, project: str | None = None) -> AppTest:
    """Run the app (optionally with a project open) and switch to ``views/<page>``."""
    app = AppTest.from_file(APP, default_timeout=TIMEOUT_S)
    if project:
        app.session_state["project"] = project
    app.run()
    if page:
        app.switch_page(f"views/{page}").run()
    assert not app.exception, app.exception
    return app


def texts(app: AppTest, kind: str) -> list[str]:
    return [element.value for element in getattr(app, kind)]


def test_home_opens_the_demo_project(data_root):
    app = open_page(None)
    assert any("No projects yet" in text for text in texts(app, "caption"))
    next(button for button in app.button if button.label == "Open demo project").click().run()
    assert not app.exception
    assert app.session_state["project"] == "demo"
    assert app.query_params["project"] == "demo"
    assert sorted(p.name for p in (data_root / "projects" / "demo" / "images").iterdir()) == [
        "tissue_1.tif", "tissue_2.tif", "tissue_3.tif"]
    assert any("Open project: **demo**" in text for text in texts(app, "success"))


def test_a_bad_upload_is_reported_by_name_and_the_good_file_goes_in(data_root):
    def script(root: str) -> None:
        import io
        from types import SimpleNamespace

        import numpy as np
        import tifffile

        from dashboard.uploads import add_uploads, show_upload_messages
        from impartial.config import whole_cell_tasks
        from impartial.project import create_project

        project = create_project(root, "upload", ["membrane", "nuclear"], whole_cell_tasks())
        good = io.BytesIO()
        tifffile.imwrite(good, np.random.default_rng(0).random((2, 32, 32), dtype=np.float32))
        files = [SimpleNamespace(name="broken.tif", size=9, getvalue=lambda: b"not a tif"),
                 SimpleNamespace(name="good.tif", size=len(good.getvalue()), getvalue=good.getvalue)]
        add_uploads(project, files)
        show_upload_messages()  # what the page shows after the rerun that empties the uploader

    app = AppTest.from_function(script, args=(str(data_root),), default_timeout=TIMEOUT_S).run()
    assert not app.exception, app.exception
    errors = texts(app, "error")
    assert len(errors) == 1 and errors[0].startswith("broken.tif: ")
    assert texts(app, "success") == ["Added 1 image(s): good"]


def test_epoch_counts_and_progress_read_sensibly_with_and_without_a_time_budget():
    assert (epoch_count({"epoch": 12, "total_epochs": 40}), progress_fraction({"epoch": 12, "total_epochs": 40})) == (
        "12 / 40", 0.3)
    budget = {"epoch": 12, "total_epochs": 40, "budget_s": 300.0, "elapsed_s": 90.0}
    assert (epoch_count(budget), progress_fraction(budget)) == ("12 / about 40", 0.3)  # the bar follows the clock
    assert epoch_count({"epoch": 0, "total_epochs": 0, "budget_s": 300.0}) == "0 / ?"  # before the first epoch
    spent = {"epoch": 41, "total_epochs": 41, "budget_s": 300.0, "elapsed_s": 306.0}  # the last epoch overran
    assert (epoch_count(spent), progress_fraction(spent)) == ("41 / 41", 1.0)


def test_a_budgeted_run_shows_its_estimated_epochs_in_the_runs_table(data_root):
    create_demo_project(data_root, n_images=1, size=64)
    run_dir = data_root / "projects" / "demo" / "runs" / "20260101-000000-abcdef"
    run_dir.mkdir(parents=True)
    (run_dir / "status.json").write_text(json.dumps({"state": "stopped", "updated": time.time(), "epoch": 12,
                                                     "total_epochs": 40, "elapsed_s": 90.0, "budget_s": 300.0}))
    app = open_page("3_Train.py", project="demo")
    assert not app.exception, app.exception
    assert app.dataframe[0].value["epoch"].tolist() == ["12 / about 40"]


def test_training_without_scribbles_says_so(data_root):
    project = create_demo_project(data_root, n_images=1, size=64)
    project.save_scribbles("tissue_1", np.zeros((64, 64, 2), np.uint8))
    app = open_page("3_Train.py", project="demo")
    next(button for button in app.button if button.label == "Start training").click().run()
    assert not app.exception
    assert any("no scribbles" in text.lower() for text in texts(app, "error"))
    assert not (data_root / "projects" / "demo" / "runs").exists() or not any(
        (data_root / "projects" / "demo" / "runs").iterdir())


def test_results_without_runs_says_so(data_root):
    create_demo_project(data_root, n_images=1, size=64)
    app = open_page("4_Results.py", project="demo")
    assert any("No trained runs yet" in text for text in texts(app, "info"))


def test_pages_without_a_project_point_to_the_projects_page(data_root):
    app = open_page("2_Scribble.py")
    assert any("No project is open" in text for text in texts(app, "info"))


def test_a_run_cut_off_by_a_restart_reads_interrupted_and_offers_resume(data_root):
    create_demo_project(data_root, n_images=1, size=64)
    run_dir = data_root / "projects" / "demo" / "runs" / "20260101-000000-abcdef"
    run_dir.mkdir(parents=True)
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()  # its pid now belongs to no process, like a server that was restarted
    (run_dir / "status.json").write_text(json.dumps({"state": "running", "pid": finished.pid, "updated": time.time(),
                                                     "epoch": 3, "total_epochs": 10}))
    (run_dir / "state.pt").write_bytes(b"")
    app = open_page("3_Train.py", project="demo")
    assert "interrupted" in app.dataframe[0].value["state"].tolist()
    assert [button.label for button in app.button if button.label == "Resume"] == ["Resume"]


def test_with_logins_each_user_gets_their_own_demo(data_root, monkeypatch):
    monkeypatch.setenv("IMPARTIAL_PASSWORD", "lab-secret")
    app = AppTest.from_file(APP, default_timeout=TIMEOUT_S)
    app.session_state["impartial_user"] = "alice@lab.org"  # logged in through dashboard/access.py's form
    app.run()
    next(button for button in app.button if button.label == "Open demo project").click().run()
    assert not app.exception, app.exception
    assert app.session_state["project"] == "demo_alice_lab.org"
    meta = json.loads((data_root / "projects" / "demo_alice_lab.org" / "project.json").read_text())
    assert meta["owner"] == "alice@lab.org"


# --- pages with trained runs --------------------------------------------------------------------

def heat_map_titles(app: AppTest) -> list[str]:
    """The titles of the heat-map pictures (captions "<title> (colour bar: 0 to <top>)")."""
    return [caption.partition(" (colour bar")[0] for image in app.image for caption in image.captions
            if " (colour bar: 0 to " in caption]


def results_for(run_id: str) -> AppTest:
    """The Results page showing ``run_id`` (on the first image)."""
    app = open_page("4_Results.py", project="demo")
    app.selectbox[0].set_value(run_id).run()
    assert not app.exception, app.exception
    return app


def cells_shown(app: AppTest) -> int:
    """The cell count in the caption of the outlined image."""
    caption = app.image[0].captions[0]
    return int(re.search(r": (\d+) cells found", caption).group(1))


def exported_cells(root: Path, run_id: str) -> int:
    """Cells in the label TIFF the Results page last exported for the first image (once its writer is done)."""
    assert images.wait_for_exports(timeout_s=60)
    (labels,) = (root / "projects" / "demo" / "predictions" / run_id).glob("tissue_1_labels.tif")
    return int(tifffile.imread(labels).max())


def test_results_show_cell_cores_and_a_seed_slider_that_the_cells_follow(trained_root):
    root, run_id, _ = trained_root
    run = Run.load(root / "projects" / "demo" / "runs" / run_id)
    app = results_for(run_id)
    assert {"Cell cores", "Variance: cell cores", "Probability: cell", "Variance: cell"} <= set(heat_map_titles(app))
    seed = app.slider(key=f"core-threshold-{run_id}")
    assert seed.label == "Seed (cell core) threshold"
    assert seed.value == pytest.approx(round(run.thresholds["core_threshold"], 2))
    assert app.slider(key=f"threshold-{run_id}").value == pytest.approx(round(run.thresholds["threshold"], 2))
    assert app.radio(key=f"seeds-{run_id}").value == run.thresholds["seeds"]
    chosen = (f"seed threshold {run.thresholds['core_threshold']:.2f}" if run.thresholds["seeds"] == "core"
              else "nuclei as the watershed's seeds")
    assert any(chosen in text and "each stroke in one cell" in text for text in texts(app, "caption"))

    app.radio(key=f"seeds-{run_id}").set_value("core").run()
    counts = {}
    for value in (0.05, 0.95):
        app.slider(key=f"core-threshold-{run_id}").set_value(value).run()
        assert not app.exception, app.exception
        counts[value] = cells_shown(app)
        assert exported_cells(root, run_id) == counts[value]  # the downloads follow the slider too
    # more seeds above a high threshold: touching cells come apart (a 20-epoch run finds several cores)
    assert counts[0.95] > counts[0.05]


def test_results_of_a_run_without_cell_cores_have_no_seed_slider(trained_root):
    root, _, run_id = trained_root
    app = results_for(run_id)
    labels = [slider.label for slider in app.slider]
    assert labels[:2] == ["Cell probability threshold", "Outline opacity"]  # then the channel display's
    assert "Seed (cell core) threshold" not in labels
    assert not {"Cell cores", "Variance: cell cores"} & set(heat_map_titles(app))
    assert "Variance: cell" in heat_map_titles(app)
    assert not any("seed threshold" in text for text in texts(app, "caption"))


SHORT_RUN = (("train.epochs", 1), ("train.patches_per_epoch", 8), ("train.batch", 8), ("train.nsaves", 1),
             ("predict.mcdrop", 1), ("train.preview_every", 0))


def short_run_form(app: AppTest) -> AppTest:
    """Fill the Train form (quick preset) for a run of seconds."""
    for field, value in SHORT_RUN:
        app.number_input(key=f"{field}-quick").set_value(value)
    return app


def started_run(app: AppTest, runs: Path, before: set[str] = frozenset()) -> Path:
    """Press Start training; returns the new run's folder once it saved a checkpoint (its config is on disk)."""
    next(button for button in app.button if button.label == "Start training").click().run()
    assert not app.exception, app.exception
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline and not {path.parts[-3] for path in runs.glob("*/checkpoints/*.pt")} - before:
        time.sleep(0.2)
    (run_dir,) = [path for path in runs.iterdir() if path.name not in before]
    return run_dir


def wait_for_the_run_to_end(run_dir: Path) -> None:
    """Let the background training finish, so it does not run on beside later tests."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline and Run.load(run_dir).status.get("state") not in ("done", "failed", "stopped"):
        time.sleep(0.2)
    assert Run.load(run_dir).status.get("state") == "done"


def test_the_train_form_settings_reach_the_saved_run_config(data_root):
    create_demo_project(data_root, n_images=1, size=128)
    app = short_run_form(open_page("3_Train.py", project="demo"))
    app.number_input(key="train.wsep-quick").set_value(0.2)
    assert app.checkbox(key="train.prior-quick").label == "Start from the pretrained cell prior"
    assert app.checkbox(key="separation-quick").label == "Learn to separate touching cells (cell-core output)"
    assert not app.checkbox(key="separation-quick").value  # off by default (see RunConfig.separation)
    app.checkbox(key="train.prior-quick").uncheck()
    app.checkbox(key="separation-quick").check()
    run_dir = started_run(app, data_root / "projects" / "demo" / "runs")
    saved = RunConfig.load(run_dir / "config.json")
    assert (saved.train.prior, saved.separation, saved.train.wsep, saved.train.epochs) == (False, True, 0.2, 1)
    assert open_project(data_root, "demo").config_defaults().train.wsep == 0.2  # remembered for the next visit
    wait_for_the_run_to_end(run_dir)


def test_fine_tuning_keeps_the_earlier_runs_outputs(trained_root):
    root, _, without_cores = trained_root
    runs = root / "projects" / "demo" / "runs"
    before = {path.name for path in runs.iterdir()}
    app = short_run_form(open_page("3_Train.py", project="demo"))
    app.checkbox(key="separation-quick").check()  # the form asks for cores; the earlier network has none
    next(box for box in app.selectbox if box.label == "Start from").set_value(without_cores)
    run_dir = started_run(app, runs, before)
    wait_for_the_run_to_end(run_dir)
    saved, earlier = Run.load(run_dir).config, Run.load(runs / without_cores).config
    assert (saved.separation, saved.model) == (False, earlier.model)


def test_the_device_queue_hides_other_users_private_projects_and_names():
    from dashboard.training import job_line
    from impartial.jobs import JobInfo

    job = JobInfo(id="1", owner="alice", project="alice-secret-study", label="train · alice-secret-study",
                  state="queued", progress={}, error=None, created=0.0, started=None, finished=None,
                  queue_position=2)
    hidden = job_line(job, visible_projects={"bob-project"})
    assert hidden == "**another user's training** — queued, queue position 2"
    assert "alice" not in hidden
    assert job_line(job, visible_projects={"alice-secret-study"}) == (
        "**train · alice-secret-study** — queued, queue position 2 (by alice)")


def test_results_leave_a_damaged_image_out_and_say_so(trained_runs, tmp_path, monkeypatch):
    root = tmp_path / "copy"
    shutil.copytree(trained_runs[0], root)  # the module's runs stay whole for the other tests
    serve_data_root(monkeypatch, root)
    image = root / "projects" / "demo" / "images" / "tissue_1.tif"
    image.write_bytes(image.read_bytes()[:200])
    app = results_for(trained_runs[1])
    assert any("tissue_1" in element.value for element in app.warning)
    assert app.selectbox(key="results_image").options == ["tissue_2"]


def _page_with_a_bad_input() -> None:
    import streamlit as st

    from dashboard.state import user_errors
    from impartial.errors import InputError

    with user_errors():
        st.write("before")
        raise InputError("not a usable file name", "''")
    st.write("after")  # the page goes on after the block


def test_user_errors_shows_the_message_and_the_page_goes_on():
    app = AppTest.from_function(_page_with_a_bad_input, default_timeout=TIMEOUT_S).run()
    assert not app.exception
    assert texts(app, "error") == ["'': not a usable file name"]
    assert texts(app, "markdown") == ["before", "after"]


def test_session_state_keys_are_distinct():
    from dashboard import keys

    names = {name: value for name, value in vars(keys).items() if name.isupper()}
    assert len(set(names.values())) == len(names), names
