"""A new user in headless Chromium: demo project, two strokes, a short training, results, downloads."""

import io
import re
import time

import numpy as np
import pandas as pd
import tifffile
from canvas_actions import draw_stroke, scribbled, wait_for_count_change
from playwright.sync_api import Page, expect

TRAINING_TIMEOUT_MS = 150_000  # a few epochs on a shared 2-core CPU
NPZ_KEYS = {"class_segmentation", "class_segmentation_variance", "entropy", "instances"}
CSV_COLUMNS = {"id", "class", "area", "centroid_y", "centroid_x", "mean_uncertainty"}
VARIANCE_CAPTION = re.compile(r"^Variance: cell \(colour bar")  # the class's map, not "Variance: cell cores"


def go_to(page: Page, title: str) -> None:
    """Open a page from the sidebar navigation and wait for its title."""
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=title).click()
    expect(page.get_by_role("heading", name=re.compile(f"^{title}"))).to_be_visible()


def download(page: Page, label: str) -> bytes:
    with page.expect_download() as event:
        page.get_by_role("button", name=label).click()
    return event.value.path().read_bytes()


def upload_image(page: Page, name: str) -> None:
    """Put a small 2-channel TIFF into the Dataset page's image uploader and press "Add images"."""
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.random.default_rng(len(name)).random((2, 64, 64)).astype(np.float32))
    add = page.get_by_role("button", name="Add images")
    expect(add).to_have_count(1)  # the form of the previous upload has gone
    page.get_by_test_id("stFileUploaderDropzoneInput").first.set_input_files(
        files=[{"name": name, "mimeType": "image/tiff", "buffer": buffer.getvalue()}])
    chip = page.get_by_test_id("stFileChip").filter(has_text=name)
    expect(chip).to_be_visible()
    expect(chip.get_by_test_id("stFileChipIconSpinner")).to_have_count(0)  # the file has reached the server
    add.click()


def test_new_user_scribbles_trains_and_downloads(page, dashboard_url, screenshots):
    page.goto(dashboard_url)
    expect(page.get_by_role("heading", name="ImPartial")).to_be_visible()
    page.screenshot(path=screenshots / "1_projects.png", full_page=True)

    page.get_by_role("button", name="Open demo project").click()
    expect(page.get_by_text("Open project:")).to_be_visible()

    go_to(page, "Dataset")  # two uploads, the second right after the first: both are stored
    upload_image(page, "upload_a.tif")
    expect(page.get_by_text("Added 1 image(s): upload_a")).to_be_visible(timeout=30_000)
    upload_image(page, "upload_b.tif")
    expect(page.get_by_text("Added 1 image(s): upload_b")).to_be_visible(timeout=30_000)

    go_to(page, "Scribble")
    expect(page.locator("canvas.view")).to_be_visible()
    cells, background = scribbled(page, "cell"), scribbled(page, "background")
    draw_stroke(page, (0.30, 0.30), (0.36, 0.34))
    wait_for_count_change(page, "cell", cells)
    page.get_by_role("button", name="background [2]").click()
    draw_stroke(page, (0.70, 0.75), (0.80, 0.78))
    wait_for_count_change(page, "background", background)
    page.screenshot(path=screenshots / "2_scribble.png", full_page=True)

    go_to(page, "Train")
    for label, value in (("Epochs", "4"), ("Patches per epoch", "64"), ("Preview every N epochs (0 = never)", "1")):
        field = page.get_by_label(label, exact=True)
        field.fill(value)
        field.press("Tab")
    started = time.monotonic()
    page.get_by_role("button", name="Start training").click()
    progress = page.get_by_test_id("stProgress").get_by_role("progressbar")
    expect(page.get_by_text(re.compile(r"Epoch [1-4] / 4"))).to_be_visible(timeout=TRAINING_TIMEOUT_MS)
    assert float(progress.get_attribute("aria-valuenow")) > 0  # the bar moved before the run ended
    expect(page.get_by_text(re.compile("Preview after epoch"))).to_be_visible(timeout=TRAINING_TIMEOUT_MS)
    first_preview_s = time.monotonic() - started
    expect(page.get_by_test_id("stImage").locator("img").first).to_be_visible()
    expect(page.get_by_text("Epoch 4 / 4")).to_be_visible(timeout=TRAINING_TIMEOUT_MS)
    assert float(progress.get_attribute("aria-valuenow")) == 100
    # kept beside the screenshots, which CI prints: the time a user waits for the first preview
    (screenshots / "timings.txt").write_text(f"first preview {first_preview_s:.1f} s after pressing Start\n")
    page.screenshot(path=screenshots / "3_train.png", full_page=True)

    go_to(page, "Results")
    expect(page.get_by_text(VARIANCE_CAPTION)).to_be_visible(timeout=TRAINING_TIMEOUT_MS)
    page.screenshot(path=screenshots / "4_results.png", full_page=True)

    with np.load(io.BytesIO(download(page, "Prediction (npz)")), allow_pickle=False) as archive:
        assert NPZ_KEYS <= set(archive.files)
        assert archive["instances"].shape == (256, 256)
    table = pd.read_csv(io.BytesIO(download(page, "Cells (CSV)")))
    assert CSV_COLUMNS <= set(table.columns)
    assert len(table) > 0
