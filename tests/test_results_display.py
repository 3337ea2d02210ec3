"""The Results picture follows the page's channel controls and can show the labels' outlines."""

import io

from PIL import Image
from streamlit.testing.v1 import AppTest
from test_app import results_for

from dashboard import images, render
from impartial.demo import create_demo_project
from impartial.runs import Run


def picture_url(app: AppTest) -> str:
    """Where the outlined picture is served from: another picture, another address."""
    return app.image[0].proto.imgs[0].url


def test_channels_can_be_hidden_and_labels_outlined_on_the_results_picture(trained_root):
    _, run_id, _ = trained_root
    app = results_for(run_id)
    before = picture_url(app)
    next(box for box in app.checkbox if box.key == "results-show-0").uncheck().run()
    assert not app.exception, app.exception
    hidden = picture_url(app)
    assert hidden != before  # the picture changed at once, nothing saved
    next(box for box in app.checkbox if box.label.startswith("Outlines of the labels")).check().run()
    assert picture_url(app) not in (before, hidden)


def test_the_outlined_picture_is_no_larger_than_the_pages_pictures(trained_root, monkeypatch):
    # a 96 px image under a 40 px limit: every third pixel, 32 x 32, as the heat maps are subsampled
    root, run_id, _ = trained_root
    monkeypatch.setattr(render, "MAX_PICTURE_SIDE", 40)
    images._outlined.clear()
    project = create_demo_project(root)  # opens the trained one
    run = Run.load(project.run_dir(run_id))
    picture = Image.open(io.BytesIO(images.outlined(run, project, project.images()[0])))
    assert picture.size == (32, 32)
    images._outlined.clear()
