"""Project folders: names, access, uploads, annotations, restart, runs and the demo."""

import io as bytes_io
import json

import numpy as np
import pytest
import tifffile

from impartial.config import RunConfig, TaskConfig, tissuenet_tasks, whole_cell_tasks
from impartial.demo import create_demo_project
from impartial.errors import InputError
from impartial.io import normalize_percentile
from impartial.project import (
    DEFAULT_DATA_ROOT,
    Project,
    check_importable,
    create_project,
    data_root_from_env,
    delete_project,
    list_projects,
    open_project,
    safe_name,
)
from impartial.runs import write_status

H, W = 24, 32


def tiff_bytes(array: np.ndarray) -> bytes:
    buffer = bytes_io.BytesIO()
    tifffile.imwrite(buffer, array, photometric="minisblack")
    return buffer.getvalue()


def two_channel_image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1000, (2, H, W)).astype(np.float32)


@pytest.fixture
def project(tmp_path) -> Project:
    return create_project(tmp_path, "p1", ["membrane", "nuclear"], whole_cell_tasks(), owner="ann")


def with_image(project: Project, name: str = "img.tif", seed: int = 0) -> str:
    return project.add_image(name, tiff_bytes(two_channel_image(seed)))


# --- names and locations ------------------------------------------------------------------------

@pytest.mark.parametrize("filename, expected", [
    ("cells.tif", "cells.tif"),
    ("../../etc/passwd", "passwd"),
    ("/abs/dir/img_01.tif", "img_01.tif"),
    ("C:\\Users\\ann\\my image.tif", "my_image.tif"),
    ("Zürich é.png", "Zurich_e.png"),
    ("細胞.tif", "__.tif"),
    (".hidden.tif", "hidden.tif"),
    ("a;rm -rf$.tif", "a_rm_-rf_.tif"),
])
def test_safe_name_keeps_names_inside_the_folder(filename, expected):
    assert safe_name(filename) == expected


@pytest.mark.parametrize("filename", ["", ".", "..", "../..", "dir/", "...", "\\"])
def test_safe_name_refuses_names_with_nothing_left(filename):
    with pytest.raises(InputError):
        safe_name(filename)


def test_data_root_flag_beats_environment_beats_default(monkeypatch, tmp_path):
    monkeypatch.delenv("IMPARTIAL_DATA", raising=False)
    assert data_root_from_env() == DEFAULT_DATA_ROOT
    monkeypatch.setenv("IMPARTIAL_DATA", str(tmp_path / "env"))
    assert data_root_from_env() == tmp_path / "env"
    assert data_root_from_env(tmp_path / "flag") == tmp_path / "flag"


# --- create, open, list -------------------------------------------------------------------------

def test_visibility_follows_owner_and_sharing(tmp_path):
    create_project(tmp_path, "mine", ["a", "b"], whole_cell_tasks(), owner="ann")
    create_project(tmp_path, "public", ["a", "b"], whole_cell_tasks(), owner=None)
    theirs = create_project(tmp_path, "theirs", ["a", "b"], whole_cell_tasks(), owner="bob")

    assert [info.name for info in list_projects(tmp_path, user="ann")] == ["mine", "public"]
    assert [info.name for info in list_projects(tmp_path, user="bob")] == ["public", "theirs"]
    assert [info.name for info in list_projects(tmp_path)] == ["mine", "public", "theirs"]
    with pytest.raises(PermissionError):
        open_project(tmp_path, "theirs", user="ann")

    theirs.set_shared(True)
    assert [info.name for info in list_projects(tmp_path, user="ann")] == ["mine", "public", "theirs"]
    assert open_project(tmp_path, "theirs", user="ann").owner == "bob"


def test_create_refuses_taken_and_bad_names_and_open_refuses_missing(tmp_path, project):
    with pytest.raises(InputError, match="exists"):
        create_project(tmp_path, "p1", ["a", "b"], whole_cell_tasks())
    for bad in ["../evil", "my project", "", ".."]:
        with pytest.raises(InputError):
            create_project(tmp_path, bad, ["a", "b"], whole_cell_tasks())
    with pytest.raises(InputError, match="no such project"):
        open_project(tmp_path, "nothing")
    with pytest.raises(InputError, match="rec_channels"):  # whole-cell tasks reconstruct channels 0 and 1
        create_project(tmp_path, "one", ["dapi"], whole_cell_tasks())
    for empty in ["", "   "]:
        with pytest.raises(InputError) as refused:
            create_project(tmp_path, empty, ["a", "b"], whole_cell_tasks())
        assert str(refused.value).startswith("give the project a name")


def test_only_the_owner_deletes_a_project_and_it_can_be_recovered(tmp_path, project):
    with_image(project)
    project.set_shared(True)  # bob sees it but may not delete it
    with pytest.raises(PermissionError):
        delete_project(tmp_path, "p1", user="bob")
    running = project.new_run_dir()
    write_status(running, "running")  # this process: alive
    with pytest.raises(InputError, match="training"):
        delete_project(tmp_path, "p1", user="ann")
    write_status(running, "done")
    kept = delete_project(tmp_path, "p1", user="ann")
    assert [info.name for info in list_projects(tmp_path)] == []
    assert kept.parent == tmp_path / "deleted" and (kept / "images" / "img.tif").exists()


def test_the_pixel_size_is_kept_and_checked(tmp_path, project):
    assert project.pixel_size_um is None
    project.set_pixel_size(0.325)
    assert open_project(tmp_path, "p1").pixel_size_um == 0.325
    for bad in (0, -1.0, float("nan"), "0.3"):
        with pytest.raises(InputError, match="pixel size"):
            project.set_pixel_size(bad)
    project.set_pixel_size(None)
    assert open_project(tmp_path, "p1").pixel_size_um is None


def test_project_file_holds_the_metadata(project):
    meta = json.loads((project.dir / "project.json").read_text())
    assert meta["name"] == "p1" and meta["owner"] == "ann" and meta["shared"] is False
    assert meta["channels"] == ["membrane", "nuclear"]
    assert len(meta["colors"]) == 2 and meta["contrast"] == [[1.0, 99.8], [1.0, 99.8]]
    assert meta["tasks"][0]["classes"] == ["cell"]


# --- images -----------------------------------------------------------------------------------

def test_bad_files_are_reported_by_name_and_good_ones_go_in(project):
    with_image(project, "first.tif")
    files = [
        ("good_a.tif", tiff_bytes(two_channel_image(1))),
        ("corrupt.tif", b"II*\x00" + b"\x07" * 40),
        ("one_channel.tif", tiff_bytes(np.ones((H, W), np.float32))),
        ("notes.png", b"this is a text file, not a picture"),
        ("empty.tif", b""),
        ("good_b.tif", tiff_bytes(two_channel_image(2))),
    ]
    names, errors = project.add_images(files)
    assert names == ["good_a", "good_b"]
    assert [error.path for error in errors] == ["corrupt.tif", "one_channel.tif", "notes.png", "empty.tif"]
    assert all(str(error).startswith(error.path + ": ") for error in errors)
    assert project.images() == ["first", "good_a", "good_b"]
    assert sorted(p.name for p in (project.dir / "images").iterdir()) == ["first.tif", "good_a.tif", "good_b.tif"]


def test_uploads_keep_raw_values_get_unique_safe_names_and_stay_inside(project):
    image = two_channel_image(3)
    assert project.add_image("../../outside.tif", tiff_bytes(image)) == "outside"
    assert project.add_image("outside.tif", tiff_bytes(image)) == "outside_2"
    assert project.add_image("sub/outside.tif", tiff_bytes(image)) == "outside_3"
    assert not (project.dir.parent / "outside.tif").exists()
    np.testing.assert_array_equal(project.load_image("outside_2"), image)
    assert project.image_shape("outside") == (H, W)


def test_an_upload_may_replace_the_image_of_its_name_with_its_annotations(project):
    name = with_image(project, "tissue.tif")
    project.add_labels(name, "l.tif", tiff_bytes(np.ones((H, W), np.int32)))
    project.save_scribbles(name, scribble_example(), user="ann")
    project.normalized(name)  # cached: must not outlive the replaced file
    replacement = two_channel_image(7)
    assert project.add_image("tissue.tif", tiff_bytes(replacement), replace=True) == "tissue"
    assert project.images() == ["tissue"]
    np.testing.assert_array_equal(project.load_image("tissue"), replacement)
    assert project.load_labels("tissue") is None and not project.load_scribbles("tissue").any()
    assert project.history("tissue").count("ann") == (0, 0)
    np.testing.assert_allclose(project.normalized("tissue"), normalize_percentile(replacement), atol=1e-6)


def test_the_first_image_may_set_the_channel_count(tmp_path):
    project = create_project(tmp_path, "three", ["membrane", "nuclear"], whole_cell_tasks())
    image = np.random.default_rng(0).uniform(0, 1, (3, H, W)).astype(np.float32)
    project.add_image("rgbish.tif", tiff_bytes(image))
    assert project.channels == ["membrane", "nuclear", "channel 3"]
    assert len(project.colors) == 3 and len(project.contrast) == 3
    with pytest.raises(InputError, match="2 channel"):
        project.add_image("two.tif", tiff_bytes(two_channel_image()))

    single = create_project(tmp_path, "single", ["membrane", "nuclear"], whole_cell_tasks())
    with pytest.raises(InputError) as caught:  # the tasks reconstruct channel 1, which one channel lacks
        single.add_image("gray.tif", tiff_bytes(np.ones((H, W), np.float32)))
    assert caught.value.path == "gray.tif"
    assert single.images() == [] and single.channels == ["membrane", "nuclear"]


def test_normalized_is_percentile_normalised_and_cached(project):
    name = with_image(project)
    first = project.normalized(name)
    np.testing.assert_allclose(first, normalize_percentile(project.load_image(name)))
    assert project.normalized(name) is first


def test_labels_must_match_the_image(project):
    name = with_image(project)
    labels = np.zeros((H, W), np.int32)
    labels[2:6, 3:9] = 1
    labels[10:20, 10:30] = 7
    project.add_labels(name, "cells_masks.tif", tiff_bytes(labels))
    np.testing.assert_array_equal(project.load_labels(name), labels)
    with pytest.raises(InputError) as caught:
        project.add_labels(name, "wrong.tif", tiff_bytes(np.zeros((H + 1, W), np.int32)))
    assert caught.value.path == "wrong.tif"
    with pytest.raises(InputError, match="no image named"):
        project.add_labels("missing", "x.tif", tiff_bytes(labels))


def test_import_folder_pairs_labels_and_reports_bad_files(tmp_path, project):
    folder = tmp_path / "incoming"
    folder.mkdir()
    labels = np.zeros((H, W), np.int32)
    labels[4:12, 4:12] = 3
    (folder / "a.tif").write_bytes(tiff_bytes(two_channel_image(1)))
    (folder / "a_masks.tif").write_bytes(tiff_bytes(labels))
    (folder / "b.tif").write_bytes(tiff_bytes(two_channel_image(2)))
    (folder / "broken.tif").write_bytes(b"not a tiff")
    (folder / "readme.txt").write_text("ignored: not an image type")
    names, errors = project.import_folder(folder)
    assert names == ["a", "b"]
    assert [error.path for error in errors] == ["broken.tif"]
    np.testing.assert_array_equal(project.load_labels("a"), labels)
    assert project.load_labels("b") is None


def test_import_tissuenet_npz_keeps_whole_cell_labels(tmp_path, project):
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (2, H, W, 2)).astype(np.float32)
    labels = np.zeros((2, H, W, 2), np.int32)
    labels[0, 1:5, 1:5, 0], labels[0, 2:4, 2:4, 1] = 4, 9  # whole cell, then nucleus
    path = tmp_path / "tn.npz"
    np.savez(path, X=images, y=labels)
    names, errors = project.import_folder(path)
    assert names == ["tn_000", "tn_001"] and errors == []
    np.testing.assert_array_equal(project.load_image("tn_000"), np.moveaxis(images[0], -1, 0))
    np.testing.assert_array_equal(project.load_labels("tn_000"), labels[0, ..., 0])


# --- scribbles, restart, delete ---------------------------------------------------------------

def scribble_example() -> np.ndarray:
    scribbles = np.zeros((H, W, 2), np.uint8)
    scribbles[5, 3:10, 0] = 1  # a cell stroke
    scribbles[15:20, 25, 1] = 1  # a background stroke
    return scribbles


def test_scribbles_round_trip_atomically_and_survive_a_restart(tmp_path, project):
    name = with_image(project)
    assert project.load_scribbles(name).shape == (H, W, 2) and not project.load_scribbles(name).any()
    project.save_scribbles(name, scribble_example())
    assert sorted(p.name for p in (project.dir / "scribbles").iterdir()
                  if not p.name.endswith(".lock")) == [f"{name}.npz"]  # no temp file left

    reopened = open_project(tmp_path, "p1", user="ann")
    np.testing.assert_array_equal(reopened.load_scribbles(name), scribble_example())
    assert reopened.load_scribbles(name).dtype == np.uint8
    assert reopened.load_val_mask(name) is None
    assert reopened.images() == [name] and reopened.channels == ["membrane", "nuclear"]
    with pytest.raises(InputError, match="expected"):
        reopened.save_scribbles(name, np.zeros((H, W, 3), np.uint8))


def test_delete_removes_image_labels_scribbles_and_history(project):
    keep, gone = with_image(project, "keep.tif"), with_image(project, "gone.tif", seed=1)
    project.add_labels(gone, "l.tif", tiff_bytes(np.ones((H, W), np.int32)))
    project.save_scribbles(gone, scribble_example(), user="ann")
    assert any(project.history(gone).folder.iterdir())
    project.delete_image(gone)
    assert project.images() == [keep]
    folders = [project.dir / kind for kind in ("images", "labels", "scribbles", "history")]
    leftovers = [p.name for folder in folders for p in folder.rglob("*") if not p.name.endswith(".lock")]
    assert leftovers == ["keep.tif"]
    with pytest.raises(InputError):
        project.load_image(gone)


def test_changing_classes_needs_a_scribble_reset(project):
    name = with_image(project)
    project.save_scribbles(name, scribble_example())
    same_classes = [TaskConfig(name="cells", classes=["cell"], rec_channels=[0], ncomponents=[3, 2])]
    project.set_tasks(same_classes)  # same scribble layout: allowed, scribbles kept
    assert project.tasks[0].ncomponents == [3, 2] and project.load_scribbles(name).any()

    with pytest.raises(InputError, match="scribbles"):
        project.set_tasks(tissuenet_tasks())
    assert project.n_scribble_channels == 2
    project.set_tasks(tissuenet_tasks(), reset_scribbles=True)
    assert project.n_scribble_channels == 4
    assert project.load_scribbles(name).shape == (H, W, 4) and not project.load_scribbles(name).any()


def test_set_channels_checks_counts_colours_and_contrast(project):
    with_image(project)
    project.set_channels(["mem", "dna"], ["#ff0000", "#0000ff"], [[0.5, 99.0], [2, 98]])
    assert project.channels == ["mem", "dna"] and project.contrast == [[0.5, 99.0], [2.0, 98.0]]
    for names, colors, contrast in [(["only"], None, None), (["a", "b"], ["red", "#000000"], None),
                                    (["a", "b"], None, [[50, 10], [0, 100]])]:
        with pytest.raises(InputError):
            project.set_channels(names, colors, contrast)


# --- training set, settings, runs ---------------------------------------------------------------

def test_training_set_uses_scribbled_images_only(project):
    config = project.config_defaults()
    with_image(project, "blank.tif")
    with pytest.raises(InputError, match="no scribbles in project p1"):
        project.training_set(config)
    name = with_image(project, "drawn.tif", seed=1)
    project.save_scribbles(name, scribble_example())
    (item,) = project.training_set(config)
    assert item.name == "drawn" and item.image.shape == (2, H, W) and item.labels is None
    assert item.val_mask.shape == (H, W) and item.val_mask.dtype == bool and item.val_mask.any()
    np.testing.assert_array_equal(item.scribbles, scribble_example())


def test_settings_are_remembered_with_the_projects_channels(tmp_path, project):
    defaults = project.config_defaults()
    assert defaults.preset == "quick" and defaults.channels == ["membrane", "nuclear"]
    defaults.train.epochs = 3
    project.save_settings(defaults)
    again = open_project(tmp_path, "p1").config_defaults()
    assert again.train.epochs == 3 and again.tasks == project.tasks
    assert isinstance(again, RunConfig)


def test_runs_are_listed_newest_first_with_their_status(project):
    first = project.new_run_dir()
    second = project.new_run_dir(label="fine tune")
    assert second.name.endswith("-fine_tune") and first.parent == project.dir / "runs"
    write_status(first, "done", epoch=3, total_epochs=3)
    runs = project.runs()
    assert sorted(run.id for run in runs) == sorted([first.name, second.name])
    assert [run.id for run in runs] == sorted((run.id for run in runs), reverse=True)
    assert {run.id: run.status["state"] for run in runs} == {first.name: "done", second.name: "new"}
    assert project.prediction_dir(first.name) == project.dir / "predictions" / first.name
    with pytest.raises(InputError):
        project.prediction_dir("../escape")


# --- the demo -----------------------------------------------------------------------------------

def test_demo_project_is_ready_to_train_and_idempotent(tmp_path):
    demo = create_demo_project(tmp_path, n_images=3, size=64, seed=0)
    assert demo.images() == ["tissue_1", "tissue_2", "tissue_3"]
    assert all(demo.load_labels(name).max() > 0 for name in demo.images())
    assert demo.scribbled_images() == ["tissue_1", "tissue_2"]
    dataset = demo.training_set(demo.config_defaults())
    assert [item.name for item in dataset] == ["tissue_1", "tissue_2"]
    for item in dataset:
        assert item.scribbles[..., 0].any() and item.scribbles[..., 1].any()  # cell and background strokes
        cell_pixels = item.scribbles[..., 0] > 0
        assert (item.labels[cell_pixels] > 0).all()  # cell strokes lie inside labelled cells
    again = create_demo_project(tmp_path, n_images=3, size=64, seed=0)
    assert again.dir == demo.dir and again.images() == demo.images()
    assert [info.name for info in list_projects(tmp_path)] == ["demo"]  # no building folder left behind


@pytest.fixture
def two_users_root(tmp_path):
    """A data root with alice's private project, bob's shared one, the imports drop folder and an outside folder."""
    root = tmp_path / "data"
    create_project(root, "alice-private", ["membrane", "nuclear"], whole_cell_tasks(), owner="alice")
    create_project(root, "bob-shared", ["membrane", "nuclear"], whole_cell_tasks(), owner="bob", shared=True)
    (root / "imports" / "batch").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    return root


def test_import_refuses_another_users_private_project(two_users_root):
    private_images = two_users_root / "projects" / "alice-private" / "images"
    assert check_importable(private_images, two_users_root, "alice") == private_images.resolve()
    with pytest.raises(InputError, match="belongs to a project you cannot open"):
        check_importable(private_images, two_users_root, "bob")


def test_a_link_into_a_private_project_is_refused_too(two_users_root):
    link = two_users_root / "imports" / "sneaky"
    link.symlink_to(two_users_root / "projects" / "alice-private" / "images")
    with pytest.raises(InputError, match="belongs to a project you cannot open"):
        check_importable(link, two_users_root, "bob")


def test_shared_projects_the_drop_folder_and_listed_roots_are_importable(two_users_root, tmp_path):
    assert check_importable(two_users_root / "projects" / "bob-shared", two_users_root, "alice")
    assert check_importable(two_users_root / "imports" / "batch", two_users_root, "alice")
    with pytest.raises(InputError, match="only your projects' folders"):
        check_importable(tmp_path / "elsewhere", two_users_root, "alice")
    with pytest.raises(InputError, match="only your projects' folders"):
        check_importable(two_users_root, two_users_root, "alice")  # the data root itself: every project's files
    assert check_importable(tmp_path / "elsewhere", two_users_root, "alice", [tmp_path / "elsewhere"])


def test_concurrent_uploads_of_one_file_name_all_land_under_distinct_names(tmp_path):
    import io as bytes_io
    from concurrent.futures import ThreadPoolExecutor

    project = create_project(tmp_path, "race", ["membrane", "nuclear"], whole_cell_tasks())
    buffer = bytes_io.BytesIO()
    rng = np.random.default_rng(0)
    tifffile.imwrite(buffer, rng.random((2, 32, 32)).astype(np.float32))
    data = buffer.getvalue()
    with ThreadPoolExecutor(max_workers=8) as pool:
        names = list(pool.map(lambda _: project.add_image("same.tif", data), range(24)))
    assert len(set(names)) == 24
    assert sorted(project.images()) == sorted(names)
