"""One damaged file (truncated TIFF, garbage npz or json) names itself and leaves the rest of the project usable."""

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from test_app import open_page as open_project_page

from impartial.demo import create_demo_project
from impartial.errors import InputError
from impartial.project import Project

SCRIBBLED = ["tissue_1", "tissue_2"]  # the demo scribbles its first two images


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def garbage(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"{not what this file should hold")


# (damaged image, file under the project, how it is damaged, the reader that must name it)
CASES = {
    "truncated image": ("tissue_3", "images/tissue_3.tif", truncate, lambda p, name: p.normalized(name)),
    "truncated labels": ("tissue_1", "labels/tissue_1.tif", truncate, lambda p, name: p.load_labels(name)),
    "garbage scribbles": ("tissue_2", "scribbles/tissue_2.npz", garbage, lambda p, name: p.load_scribbles(name)),
    "garbage history": ("tissue_1", "history/tissue_1/index.json", garbage, lambda p, name: p.history(name).check()),
}


@pytest.fixture(params=list(CASES))
def damaged(request, tmp_path):
    """A demo project with one damaged file; checked once before the damage, so a stale cache would show."""
    project = create_demo_project(tmp_path, n_images=3, size=96)
    assert project.damaged_files() == {}
    name, relative, damage, reader = CASES[request.param]
    damage(project.dir / relative)
    return project, name, project.dir / relative, reader


def test_the_reader_names_the_damaged_file_in_one_line(damaged):
    project, name, path, reader = damaged
    with pytest.raises(InputError) as caught:
        reader(project, name)
    assert caught.value.path == str(path)
    assert "\n" not in str(caught.value)


def test_damaged_files_lists_the_image_with_its_file(damaged):
    project, name, path, _ = damaged
    problems = Project(project.dir).damaged_files()
    assert list(problems) == [name]
    assert problems[name].path == str(path)


def test_training_uses_the_other_images(damaged):
    project, name, _, _ = damaged
    used = [item.name for item in project.training_set(project.config_defaults())]
    assert used == [image for image in SCRIBBLED if image != name]
    assert name not in project.scribbled_images()


def test_removing_the_damaged_file_makes_the_project_whole_again(damaged):
    project, name, path, _ = damaged
    project.remove_damaged(name)
    assert project.damaged_files() == {}
    assert not path.exists()
    whole_image_removed = path.parent.name == "images"
    assert (name in project.images()) != whole_image_removed  # an unreadable image goes; else only the bad file


def test_nothing_usable_left_to_train_says_no_scribbles(tmp_path):
    project = create_demo_project(tmp_path, n_images=3, size=96)
    for name in SCRIBBLED:
        garbage(project.dir / "scribbles" / f"{name}.npz")
    with pytest.raises(InputError, match="no scribbles"):
        project.training_set(project.config_defaults())


def test_scribbles_of_the_wrong_shape_count_as_damaged(tmp_path):
    project = create_demo_project(tmp_path, n_images=2, size=96)
    other = create_demo_project(tmp_path, name="bigger", n_images=1, size=64)
    (project.dir / "scribbles" / "tissue_1.npz").write_bytes((other.dir / "scribbles" / "tissue_1.npz").read_bytes())
    assert "shape" in project.damaged_files()["tissue_1"].problem


def test_checking_fifty_images_again_is_fast(tmp_path):
    project = create_demo_project(tmp_path, n_images=50, size=64)
    project.damaged_files()
    start = time.perf_counter()
    assert Project(project.dir).damaged_files() == {}
    assert time.perf_counter() - start < 0.5  # cached per file time and size: one stat per file


# --- pages --------------------------------------------------------------------------------------

def open_page(page: str) -> AppTest:
    return open_project_page(page, project="demo")


def warnings(app: AppTest) -> list[str]:
    return [element.value for element in app.warning]


@pytest.mark.parametrize("page", ["1_Dataset.py", "2_Scribble.py", "3_Train.py"])
@pytest.mark.parametrize("case", ["truncated image", "garbage scribbles", "garbage history"])
def test_pages_warn_about_the_damaged_file_and_keep_working(data_root, page, case):
    project = create_demo_project(data_root, n_images=3, size=96)
    name, relative, damage, _ = CASES[case]
    damage(project.dir / relative)
    app = open_page(page)
    assert any(Path(relative).name in text and name in text for text in warnings(app)), warnings(app)
    if page == "2_Scribble.py":
        assert name not in app.selectbox(key="scribble_image").options
        assert len(app.selectbox(key="scribble_image").options) == 2
    next(button for button in app.button if button.key == f"remove-damaged-{name}").click().run()
    assert not app.exception, app.exception
    assert not any(name in text for text in warnings(app)), warnings(app)
    assert Project(project.dir).damaged_files() == {}


def test_training_starts_on_the_good_images_when_the_preview_image_is_damaged(data_root):
    from test_app import short_run_form, started_run, wait_for_the_run_to_end

    project = create_demo_project(data_root, n_images=3, size=96)
    truncate(project.dir / "images" / "tissue_3.tif")
    garbage(project.dir / "scribbles" / "tissue_2.npz")
    app = short_run_form(open_page("3_Train.py"))
    assert "tissue_3" not in app.selectbox(key="preview_image").options  # cannot be previewed
    assert any("left out" in text for text in warnings(app))
    run_dir = started_run(app, project.dir / "runs")
    assert not [element.value for element in app.error]
    wait_for_the_run_to_end(run_dir)
