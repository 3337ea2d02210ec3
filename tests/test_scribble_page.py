"""The Scribble page through AppTest: overlays of the last run, numbered suggestions, the entropy legend."""

import re

from test_app import open_page, texts

from impartial.project import Project


def go_buttons(app) -> list:
    """The buttons that show a suggested region, in rank order."""
    return [button for button in app.button if re.fullmatch(r"tile-\d+", button.key or "")]


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
    suggestions = go_buttons(app)
    assert [button.label.split(":")[0] for button in suggestions] == [str(n) for n in range(1, len(suggestions) + 1)]
    # how many fit depends on where the best one lies (regions 64 px apart, none on strokes): spread is
    # test_suggest's; here the last one's button moves the canvas
    assert suggestions
    suggestions[-1].click().run()
    goto = app.session_state["scribble_goto"]
    top, left = (int(part.strip().split(" ")[1]) for part in suggestions[-1].label.split(":")[1].split(","))
    assert (goto["top"] + 32, goto["left"] + 32, goto["height"]) == (top, left, 96)  # the tile with context around

    first = go_buttons(app)[0].label
    app.button(key="tile-done-1").click().run()
    assert list(Project(trained_root[0] / "projects" / "demo").suggestion_states("tissue_1").values()) == ["done"]
    assert first not in [button.label for button in go_buttons(app)]  # not suggested again
