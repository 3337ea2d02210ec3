"""The scribbling canvas in Chromium: strokes from two tabs merge, zoom and pan on a large image, undo after a
zoom change, channel controls that act at once."""

import io

import numpy as np
import pytest
import tifffile
from canvas_actions import draw_stroke, scribbled, strokes, wait_for_count
from playwright.sync_api import Page, expect

from impartial.config import whole_cell_tasks
from impartial.project import create_project, open_project

SIDE = 2000


@pytest.fixture(scope="module")
def slide(dashboard_data_root) -> str:
    """A project with one 2000 x 2000 two-channel image and no scribbles; returns its name."""
    project = create_project(dashboard_data_root, "slide", ["membrane", "nuclear"], whole_cell_tasks())
    rows, cols = np.mgrid[0:SIDE, 0:SIDE]
    membrane = (np.sin(rows / 9.0) * np.cos(cols / 7.0) > 0.6).astype(np.uint16) * 3000
    nuclear = ((rows // 40 + cols // 40) % 2).astype(np.uint16) * 2000
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.stack([membrane, nuclear]))
    project.add_image("big.tif", buffer.getvalue())
    return project.name


def open_canvas(page: Page, url: str, project: str) -> None:
    page.goto(f"{url}/Scribble?project={project}")
    expect(page.locator("canvas.view")).to_be_visible()
    expect(page.get_by_text("Scribbled:")).to_be_visible()


def state(page: Page, name: str) -> str:
    return page.locator(".scribbler").get_attribute(f"data-{name}")


def canvas_picture(page: Page) -> str:
    return page.locator("canvas.view").evaluate("canvas => canvas.toDataURL()")


def test_strokes_from_two_tabs_both_land_and_each_tab_shows_the_other(browser, dashboard_url, slide,
                                                                     dashboard_data_root):
    tabs = []
    for _ in range(2):
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        tab = context.new_page()
        tab.set_default_timeout(60_000)
        open_canvas(tab, dashboard_url, slide)
        tabs.append(tab)
    first, second = tabs
    assert strokes(first, "cell") == strokes(second, "cell") == 0
    draw_stroke(first, (0.2, 0.2), (0.3, 0.25))  # each tab draws without having seen the other's stroke
    draw_stroke(second, (0.7, 0.7), (0.8, 0.75))
    for tab in tabs:  # no reload: the canvas refreshes itself
        wait_for_count(tab, "cell", lambda count: count == 2, "the other tab's stroke did not show up", strokes)
    cells = open_project(dashboard_data_root, slide).load_scribbles("big")[..., 0]
    half = SIDE // 2
    assert cells[:half, :half].any() and cells[half:, half:].any()  # both strokes, in their quarters
    for tab in tabs:
        tab.context.close()


def test_zoom_pan_undo_and_channels_on_a_large_image(page, dashboard_url, slide, screenshots):
    open_canvas(page, dashboard_url, slide)
    view = page.locator("canvas.view")
    box = view.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    while float(state(page, "scale")) < 4:
        page.mouse.wheel(0, -120)
        page.wait_for_timeout(30)
    scale = float(state(page, "scale"))
    assert 4 <= scale <= 6
    expect(page.locator(".scribbler")).to_have_attribute("data-resolution", "1")  # a full-resolution tile came

    before = state(page, "view")
    page.mouse.move(box["x"] + 300, box["y"] + 300)
    page.mouse.down(button="right")  # right-drag pans
    page.mouse.move(box["x"] + 200, box["y"] + 250, steps=5)
    page.mouse.up(button="right")
    top, left = (int(value) for value in state(page, "view").split(",")[:2])
    old_top, old_left = (int(value) for value in before.split(",")[:2])
    assert (top - old_top, left - old_left) == pytest.approx((50 / scale, 100 / scale), abs=2)

    cells = scribbled(page, "cell")
    draw_stroke(page, (0.4, 0.4), (0.5, 0.45))
    drawn = wait_for_count(page, "cell", lambda count: count > cells, "the stroke was not saved")
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, 120)  # a zoom change before the undo
    view.click(button="middle")  # focus the canvas without drawing
    page.keyboard.press("Control+z")
    wait_for_count(page, "cell", lambda count: count == cells, f"Ctrl+Z did not undo the {drawn - cells} px stroke")
    page.keyboard.press("Control+Shift+z")
    wait_for_count(page, "cell", lambda count: count == drawn, "Ctrl+Shift+Z did not redo the stroke")
    page.screenshot(path=screenshots / "2b_scribble_zoomed.png", full_page=True)

    page.mouse.move(0, 0)  # no brush cursor in the pictures compared
    shown = canvas_picture(page)
    page.get_by_label("show membrane").uncheck()
    assert canvas_picture(page) != shown  # at once: no rerun, no Save
    page.get_by_label("show membrane").check()
    assert canvas_picture(page) == shown
