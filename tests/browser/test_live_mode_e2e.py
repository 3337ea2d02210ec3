"""Live mode in Chromium: training starts from the Scribble page, the canvas shows its newest prediction, new
strokes are picked up, and turning it off leaves a normal run. Prints the times a user waits."""

import re
import time

import pytest
from canvas_actions import draw_stroke
from playwright.sync_api import Page, expect

from impartial.demo import create_demo_project
from impartial.project import open_project
from impartial.runs import read_status

LIVE_TIMEOUT_MS = 120_000
LIVE_LINE = re.compile(r"Live mode: the overlay is the cell probability after epoch (\d+)")


@pytest.fixture(scope="module")
def live_project(dashboard_data_root) -> str:
    return create_demo_project(dashboard_data_root, name="livedemo", n_images=2, size=128).name


def overlay_epoch(page: Page) -> int:
    return int(LIVE_LINE.search(page.get_by_text(LIVE_LINE).inner_text()).group(1))


def test_live_mode_follows_the_strokes_and_ends_as_a_normal_run(page, dashboard_url, live_project,
                                                                dashboard_data_root, screenshots):
    page.goto(f"{dashboard_url}/Scribble?project={live_project}")
    expect(page.locator("canvas.view")).to_be_visible()
    started = time.monotonic()
    page.get_by_role("button", name="Live mode").click()
    expect(page.get_by_text(LIVE_LINE)).to_be_visible(timeout=LIVE_TIMEOUT_MS)
    first_overlay_s = time.monotonic() - started
    page.mouse.move(0, 0)
    first_picture = page.locator("canvas.view").evaluate("canvas => canvas.toDataURL()")

    draw_stroke(page, (0.55, 0.55), (0.62, 0.6))
    expect(page.locator(".scribbler")).to_have_attribute("data-pending", "0")
    drawn = time.monotonic()
    # The trainer's own epoch when the stroke was saved: the page's overlay can lag it by several epochs. The epoch
    # after the one then running began after the save, so it sampled the new stroke.
    live_run = open_project(dashboard_data_root, live_project).runs()[0]
    first_with_stroke = int(read_status(live_run.dir)["epoch"]) + 2
    deadline = drawn + LIVE_TIMEOUT_MS / 1000
    while overlay_epoch(page) < first_with_stroke and time.monotonic() < deadline:  # trained on, then previewed
        page.wait_for_timeout(200)
    assert overlay_epoch(page) >= first_with_stroke
    update_s = time.monotonic() - drawn
    page.mouse.move(0, 0)
    assert page.locator("canvas.view").evaluate("canvas => canvas.toDataURL()") != first_picture
    page.screenshot(path=screenshots / "2c_live_mode.png", full_page=True)

    page.get_by_role("button", name="Stop live mode").click()
    expect(page.get_by_role("button", name="Live mode")).to_be_visible(timeout=LIVE_TIMEOUT_MS)
    deadline = time.monotonic() + 60
    while read_status(live_run.dir).get("state") != "done" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert read_status(live_run.dir)["message"] == "live mode ended"
    assert list((live_run.dir / "checkpoints").glob("cycle_*.pt")) and (live_run.dir / "thresholds.json").exists()
    with (screenshots / "timings.txt").open("a") as timings:
        timings.write(f"live mode: first overlay {first_overlay_s:.1f} s after pressing Live mode; an overlay "
                      f"trained on a new stroke {update_s:.1f} s after it was saved\n")
