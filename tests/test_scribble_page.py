"""The Scribble page through AppTest: overlays of the last run, numbered suggestions, the entropy legend."""

from test_app import open_page, texts


def checkbox(app, label: str):
    return next(box for box in app.checkbox if box.label == label)


def test_overlays_and_numbered_suggestions_of_the_last_run(trained_root):
    app = open_page("2_Scribble.py", project="demo")
    assert not checkbox(app, "Uncertainty (entropy) of the last run").disabled
    checkbox(app, "Uncertainty (entropy) of the last run").check().run()
    checkbox(app, "Scribble here next").check().run()
    checkbox(app, "Outlines of the labels").check().run()
    assert not app.exception, app.exception
    assert any("the last run's entropy (1 = it cannot tell the classes apart" in text for text in texts(app, "caption"))
    suggestions = [button for button in app.button if (button.key or "").startswith("tile-")]
    assert [button.label.split(":")[0] for button in suggestions] == ["1", "2", "3", "4", "5"]
    suggestions[1].click().run()
    goto = app.session_state["scribble_goto"]
    top, left = (int(part.strip().split(" ")[1]) for part in suggestions[1].label.split(":")[1].split(","))
    assert (goto["top"] + 32, goto["left"] + 32, goto["height"]) == (top, left, 96)  # the tile with context around
