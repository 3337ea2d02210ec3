"""How long a stroke takes to be saved on a large image, in the core and through the dashboard.

Core: `Project.draw_stroke` (lock, read the scribbles, paint, keep the undo record, write) and an undo.
Browser: a dashboard server and headless Chromium on the Scribble page; each stroke is timed from mouse-up until
the canvas says every edit is saved (the server applied it and sent the new picture back), zoomed out and zoomed in.

    .venv/bin/python benchmarks/bench_scribble_edits.py --side 4000 --strokes 8

Needs /usr/bin/chromium for the browser part (skipped with --core-only). Run it while nothing else runs.
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from impartial.config import whole_cell_tasks  # noqa: E402
from impartial.project import create_project  # noqa: E402
from impartial.strokes import Stroke  # noqa: E402

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


def make_project(data_root: Path, side: int):
    project = create_project(data_root, "bench", ["membrane", "nuclear"], whole_cell_tasks())
    rng = np.random.default_rng(0)
    image = rng.integers(0, 4000, (2, side, side), dtype=np.uint16)
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, image)
    project.add_image("slide.tif", buffer.getvalue())
    return project


def summary(times_s: list[float]) -> str:
    return (f"median {1000 * statistics.median(times_s):.0f} ms, max {1000 * max(times_s):.0f} ms "
            f"over {len(times_s)}")


def core_timings(project, strokes: int) -> None:
    name = project.images()[0]
    side = project.image_shape(name)[0]
    rng = np.random.default_rng(1)
    drawn, undone = [], []
    for index in range(strokes):
        start = rng.uniform(0.1, 0.9, 2) * side
        points = tuple(map(tuple, start + np.cumsum(rng.normal(0, 4, (60, 2)), axis=0)))
        began = time.perf_counter()
        project.draw_stroke(name, Stroke(points, 5.0, index % 2), "bench", f"draw-{index}")
        drawn.append(time.perf_counter() - began)
    for index in range(strokes // 2):
        began = time.perf_counter()
        project.undo_stroke(name, "bench", f"undo-{index}")
        undone.append(time.perf_counter() - began)
    print(f"core draw_stroke on {side} x {side}: {summary(drawn)}")
    print(f"core undo_stroke on {side} x {side}: {summary(undone)}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def browser_timings(data_root: Path, strokes: int) -> None:
    from playwright.sync_api import expect, sync_playwright

    port = free_port()
    environment = {key: value for key, value in os.environ.items() if not key.startswith("IMPARTIAL_")}
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                               "--server.port", str(port), "--browser.gatherUsageStats", "false", "--",
                               "--data-root", str(data_root)], cwd=ROOT, env=environment,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(120_000)
            for _ in range(120):
                try:
                    began = time.perf_counter()
                    page.goto(f"http://127.0.0.1:{port}/Scribble?project=bench")
                    break
                except Exception:  # the server is still starting
                    time.sleep(0.5)
            expect(page.locator("canvas.view")).to_be_visible(timeout=120_000)
            expect(page.get_by_text("Scribbled:")).to_be_visible(timeout=120_000)
            print(f"browser: Scribble page with the canvas after {time.perf_counter() - began:.1f} s")
            for label, wheel_steps in (("whole image in view", 0), ("zoomed in (about 4 screen px per px)", 14)):
                box = page.locator("canvas.view").bounding_box()
                page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
                for _ in range(wheel_steps):
                    page.mouse.wheel(0, -120)
                page.wait_for_timeout(1500)
                times = [timed_stroke(page, box, index) for index in range(strokes)]
                scale = page.locator(".scribbler").get_attribute("data-scale")
                print(f"browser stroke round trip, {label} (scale {scale}): {summary(times)}")
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)


def timed_stroke(page, box: dict, index: int) -> float:
    """Draw one short stroke; seconds from mouse-up until the canvas reports every edit saved."""
    x = box["x"] + box["width"] * (0.2 + 0.07 * (index % 9))
    y = box["y"] + box["height"] * (0.2 + 0.06 * (index % 10))
    page.mouse.move(x, y)
    page.mouse.down()
    for step in range(1, 8):
        page.mouse.move(x + 4 * step, y + 2 * step)
    page.mouse.up()
    began = time.perf_counter()
    while page.locator(".scribbler").get_attribute("data-pending") != "0":
        page.wait_for_timeout(10)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=4000, help="image side in pixels")
    parser.add_argument("--strokes", type=int, default=8, help="strokes timed per setting")
    parser.add_argument("--core-only", action="store_true", help="skip the browser part")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        project = make_project(Path(folder), args.side)
        core_timings(project, args.strokes)
        if not args.core_only:
            browser_timings(Path(folder), args.strokes)


if __name__ == "__main__":
    main()
