"""What a user does on the Scribble page's canvas, for the browser tests."""

import re
import time

import numpy as np
from playwright.sync_api import Page

COUNT_TIMEOUT_S = 30


def _counts(page: Page, brush: str) -> tuple[int, int]:
    line = page.get_by_text("Scribbled:").inner_text()
    found = re.search(rf"{re.escape(brush)}\s+(\d+) stroke\(s\), (\d+) px", line)
    return int(found.group(1)), int(found.group(2))


def scribbled(page: Page, brush: str) -> int:
    """The page's count of scribbled pixels for ``brush``."""
    return _counts(page, brush)[1]


def strokes(page: Page, brush: str) -> int:
    """The page's count of separate strokes for ``brush``."""
    return _counts(page, brush)[0]


def draw_stroke(page: Page, start: tuple[float, float], end: tuple[float, float], steps: int = 12) -> None:
    """Drag the mouse across the canvas between two points given as fractions of its size."""
    canvas = page.locator("canvas.view")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    points = np.linspace(start, end, steps)
    page.mouse.move(box["x"] + points[0][0] * box["width"], box["y"] + points[0][1] * box["height"])
    page.mouse.down()
    for x, y in points[1:]:
        page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"])
    page.mouse.up()


def wait_for_count(page: Page, brush: str, done, what: str, count_of=scribbled) -> int:
    """Poll ``count_of(page, brush)`` (pixels by default) until ``done(count)``; AssertionError naming ``what``
    after a while."""
    deadline = time.monotonic() + COUNT_TIMEOUT_S
    count = None
    while time.monotonic() < deadline:
        count = count_of(page, brush)
        if done(count):
            return count
        page.wait_for_timeout(300)
    raise AssertionError(f"{what}: the {brush} count stayed at {count}")


def wait_for_count_change(page: Page, brush: str, before: int) -> int:
    return wait_for_count(page, brush, lambda count: count > before, f"the {brush} scribbles did not grow")
