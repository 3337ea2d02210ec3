"""The Results picture follows the page's channel controls and can show the labels' outlines."""

from streamlit.testing.v1 import AppTest
from test_app import results_for


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
