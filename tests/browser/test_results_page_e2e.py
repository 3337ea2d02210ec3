"""Results of a run still training, in headless Chromium: marked provisional."""

import re

from playwright.sync_api import Page, expect

TRAINING_TIMEOUT_MS = 150_000  # a few epochs on a shared 2-core CPU
VARIANCE_CAPTION = re.compile(r"^Variance: cell \(colour bar")  # the class's map, not "Variance: cell cores"


def go_to(page: Page, title: str) -> None:
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=title).click()
    expect(page.get_by_role("heading", name=re.compile(f"^{title}"))).to_be_visible()


def test_results_of_a_run_still_training_are_provisional(page, dashboard_url, screenshots):
    page.goto(dashboard_url)
    page.get_by_role("button", name="Open demo project").click()
    expect(page.get_by_text("Open project:")).to_be_visible()

    go_to(page, "Train")  # a run far longer than the test: it is still training when Results opens
    for label, value in (("Epochs", "500"), ("Patches per epoch", "32"), ("Preview every N epochs (0 = never)", "0")):
        field = page.get_by_label(label, exact=True)
        field.fill(value)
        field.press("Tab")
    page.get_by_role("button", name="Start training").click()
    # the first epoch's checkpoint is saved once epoch 2 runs
    expect(page.get_by_text(re.compile(r"Epoch ([2-9]|\d\d+) / 500"))).to_be_visible(timeout=TRAINING_TIMEOUT_MS)

    go_to(page, "Results")
    marker = page.get_by_text(re.compile(r"Provisional: run \S+ is still training \(epoch \d+ / 500\)"))
    expect(marker).to_be_visible(timeout=TRAINING_TIMEOUT_MS)
    expect(page.get_by_text(VARIANCE_CAPTION)).to_be_visible()  # the provisional maps are drawn
    page.screenshot(path=screenshots / "results_provisional.png", full_page=True)

    go_to(page, "Train")
    page.get_by_role("button", name="Stop").click()
    expect(page.get_by_text(re.compile("stopped|Stopping"))).to_be_visible(timeout=TRAINING_TIMEOUT_MS)
