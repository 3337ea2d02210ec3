"""The Train page in headless Chromium: Start is off while the project trains, with the run still in view, and
scribbles of one side only are named before Start (issue 9)."""

import re

import numpy as np
from playwright.sync_api import Page, expect

from impartial.demo import create_demo_project

RUN_TIMEOUT_MS = 120_000  # the first epochs on a shared 2-core CPU


def open_train_page(page: Page, dashboard_url: str, project: str) -> None:
    """Open the Train page of ``project`` (the project is in the URL, as after a reload)."""
    page.goto(f"{dashboard_url}/Train?project={project}")
    expect(page.get_by_role("heading", name=f"Train · {project}")).to_be_visible(timeout=60_000)


def test_start_is_off_while_the_run_goes_and_its_progress_stays_in_view(page, dashboard_url, dashboard_data_root,
                                                                        screenshots):
    create_demo_project(dashboard_data_root, name="running", n_images=2, size=96)
    open_train_page(page, dashboard_url, "running")
    for label, value in (("Time budget, minutes (0 = train for Epochs)", "1"), ("Patches per epoch", "32")):
        field = page.get_by_label(label, exact=True)
        field.fill(value)
        field.press("Tab")
    # before any run here the estimate first times a few training steps, slow on a busy 2-core machine
    expect(page.get_by_text(re.compile(r"^Trains for its 1 min 00 s time budget"))).to_be_visible(timeout=60_000)
    start = page.get_by_role("button", name="Start training")
    start.click()

    expect(page.get_by_text(re.compile(r"A training of running is (running|waiting in the queue)"))).to_be_visible()
    expect(start).to_be_disabled()
    stop = page.get_by_role("button", name="Stop")
    expect(stop).to_be_visible(timeout=RUN_TIMEOUT_MS)
    expect(page.get_by_text(re.compile(r"remaining about .* \(the run ends at its time budget\)"))).to_be_visible(
        timeout=RUN_TIMEOUT_MS)
    expect(page.get_by_text(re.compile(r"^Preview after epoch"))).to_be_visible(timeout=RUN_TIMEOUT_MS)
    # a few refreshes of the live panel later: still one run in view, its Stop button, Start still off
    page.wait_for_timeout(5_000)
    expect(page.get_by_test_id("stProgress")).to_have_count(1)
    expect(stop).to_be_visible()
    expect(start).to_be_disabled()
    page.screenshot(path=screenshots / "train_running.png", full_page=True)

    stop.click()
    expect(page.get_by_text(re.compile(r"— stopped$"))).to_be_visible(timeout=RUN_TIMEOUT_MS)
    expect(start).to_have_count(1, timeout=30_000)  # the page redrawn after the run ended
    expect(start).to_be_enabled()


def test_scribbles_of_one_side_are_named_before_start(page, dashboard_url, dashboard_data_root, screenshots):
    project = create_demo_project(dashboard_data_root, name="one_sided", n_images=1, size=64)
    (name,) = project.scribbled_images()
    both = project.load_scribbles(name)
    cells_only = both.copy()
    cells_only[..., 1] = 0
    project.save_scribbles(name, cells_only)

    open_train_page(page, dashboard_url, "one_sided")
    warning = page.get_by_text(re.compile(r"^Only cell strokes, no background: add background strokes"))
    expect(warning).to_be_visible()
    expect(page.get_by_role("button", name="Start training")).to_be_disabled()
    expect(page.get_by_label("Epochs", exact=True)).to_be_visible()  # the form drawn, for the screenshot
    page.screenshot(path=screenshots / "train_one_sided.png", full_page=True)

    assert np.any(both[..., 1])
    project.save_scribbles(name, both)  # the background strokes drawn
    page.reload()
    expect(page.get_by_role("button", name="Start training")).to_be_enabled(timeout=60_000)
    expect(warning).to_have_count(0)
