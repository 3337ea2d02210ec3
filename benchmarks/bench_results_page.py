"""Results page render time with several browser sessions while a training runs (issue 11, point 16).

Prepares a fresh data root: the demo project ``bench`` with one finished run (trained here with the core API),
and a second demo project ``trainer``. Starts ``streamlit run app.py`` over it, opens the Train page of
``trainer`` in one headless Chromium tab and presses Start (a long training that keeps running, its live panel
refreshing), then opens the Results page of ``bench`` in ``--sessions`` more tabs at once. Each session measures

- first render: from opening the page's URL to the end of the script run that draws it; of it, the server's
  script run (from the server's first message, once the browser has loaded the frontend and connected, to its
  "script finished" message),
- reruns: from moving the cell-probability slider one step (arrow key) to the end of the rerun it starts,

where "end of a run" is the server's "script finished" message on the page's websocket followed by the page
showing no running script (``data-test-script-state`` of the app root; the running man stops), with the page's
last heading drawn. Prints each session's
times, then the median and maximum over sessions.

    .venv/bin/python benchmarks/bench_results_page.py [--sessions 5] [--reruns 3] [--own-projects]
        [--control]        # a trivial Results page: the floor
        [--unprepared]     # the run ends without keeping a prediction: the first visitor predicts it
        [--warm]           # one visit first: the sessions find the prediction computed
        [--app-root DIR]   # serve another checkout (e.g. a `git worktree` of an older commit) with the same data

``--own-projects`` gives every session its own copy of the project (nothing shared between sessions' caches);
by default they all look at the one project. ``--control`` serves the same app with a trivial Results page (the
title, one slider, the last heading): what opening any page costs in this setting, mostly the browsers loading
Streamlit's frontend on the same cores; the Results page's own cost is the difference. ``--warm`` opens the page
once before the sessions, so they find the run's prediction computed (as every visitor after the first does).
Timings depend on the machine and on whatever else runs on it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
from impartial.config import apply_overrides  # noqa: E402
from impartial.demo import create_demo_project  # noqa: E402
from impartial.results import prepare_results  # noqa: E402
from impartial.train import Trainer  # noqa: E402

sys.path.insert(0, str(ROOT / "tests" / "browser"))
from dashboard_server import start_dashboard, stop_dashboard  # noqa: E402

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
START_TIMEOUT_S = 120
PAGE_TIMEOUT_MS = 300_000
LAST_HEADING = "Predict new images"  # the Results page's last section: drawn at the end of a run
RUN_IDLE = "document.querySelector('[data-testid=\"stApp\"]')?.dataset.testScriptState === 'notRunning'"


CONTROL_PAGE = f"""from dashboard.state import require_project
import streamlit as st

require_project()
st.title("Results (control)")
st.slider("Cell probability threshold", 0.05, 0.95, 0.5, step=0.01)
st.subheader("{LAST_HEADING}")
"""


def control_app(app_root: Path, folder: Path) -> Path:
    """A copy of ``app_root`` (links to its files) whose Results page is the trivial ``CONTROL_PAGE``."""
    copy = folder / "control-app"
    (copy / "views").mkdir(parents=True)
    for path in app_root.iterdir():
        if path.name != "views":
            (copy / path.name).symlink_to(path)
    for page in (app_root / "views").iterdir():
        (copy / "views" / page.name).symlink_to(page)
    results = copy / "views" / "4_Results.py"
    results.unlink()
    results.write_text(CONTROL_PAGE)
    return copy


def prepare(data_root: Path, sessions: int, own_projects: bool, size: int, unprepared: bool) -> list[str]:
    """The demo project ``bench`` with one finished run, its copies, and ``trainer``; returns the viewed names.

    The run ends as a dashboard or command-line run does, with the opening image's prediction kept in its folder
    (``results.prepare_results``), unless ``unprepared``."""
    project = create_demo_project(data_root, name="bench", size=size)
    config = apply_overrides(project.config_defaults(), {"train.epochs": 4, "train.patches_per_epoch": 64,
                                                          "train.preview_every": 0, "train.prior": False})
    started = time.perf_counter()
    run = Trainer(config, project.training_set(config), project.new_run_dir()).run()
    if not unprepared:
        prepare_results(run, project)
    print(f"prepared a finished run in {time.perf_counter() - started:.1f} s")
    create_demo_project(data_root, name="trainer", size=size)
    if not own_projects:
        return ["bench"] * sessions
    names = [f"bench_{index + 1}" for index in range(sessions)]
    for name in names:
        shutil.copytree(project.dir, project.dir.with_name(name))
    return names


class Session:
    """One browser tab and the times (``time.perf_counter``) at which the server said a script run ended."""

    def __init__(self, page) -> None:
        self.page = page
        self.finished: list[float] = []
        self.connected: float | None = None  # the server's first message: the frontend is loaded and connected
        page.on("websocket", lambda socket: socket.on("framereceived", self._received))

    def _received(self, payload: bytes | str) -> None:
        if isinstance(payload, bytes):
            message = ForwardMsg.FromString(payload)
            if self.connected is None:
                self.connected = time.perf_counter()
            if message.WhichOneof("type") == "script_finished" and \
                    message.script_finished == ForwardMsg.FINISHED_SUCCESSFULLY:
                self.finished.append(time.perf_counter())

    async def run_end(self, since: float) -> float:
        """When the first run that ended after ``since`` is drawn: the server's "finished" message has come
        and the page shows no running script (its elements are drawn)."""
        deadline = since + PAGE_TIMEOUT_MS / 1000
        while not any(at > since for at in self.finished):
            if time.perf_counter() > deadline:
                raise TimeoutError("no script run ended")
            await asyncio.sleep(0.01)
        await self.page.wait_for_function(RUN_IDLE, polling=20)
        return time.perf_counter()


async def new_session(browser) -> Session:
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    page = await context.new_page()
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    return Session(page)


async def start_training(browser, url: str) -> None:
    """Press Start on the Train page of ``trainer`` for a long run and wait until it trains."""
    page = (await new_session(browser)).page
    await page.goto(f"{url}/Train?project=trainer")
    field = page.get_by_label("Epochs", exact=True)
    await field.fill("10000")
    await field.press("Tab")
    await page.get_by_role("button", name="Start training").click()
    await page.get_by_text("Epoch 1 /").first.wait_for(timeout=PAGE_TIMEOUT_MS)  # the tab stays open, refreshing


async def results_session(browser, url: str, project: str, reruns: int,
                          navigate: bool = False) -> dict[str, list[float]]:
    """Open the Results page, then move the threshold slider ``reruns`` times; times in s.

    ``navigate``: load the app on the project's Dataset page first, then open Results from the sidebar, as a user
    moving between pages does (the frontend is loaded once; the first render is the page switch alone)."""
    session = await new_session(browser)
    page = session.page
    if navigate:
        loaded = time.perf_counter()
        await page.goto(f"{url}/Dataset?project={project}")
        await session.run_end(loaded)
        opened = time.perf_counter()
        await page.get_by_test_id("stSidebarNav").get_by_role("link", name="Results").click()
    else:
        opened = time.perf_counter()
        await page.goto(f"{url}/Results?project={project}")
    await page.get_by_role("heading", name=LAST_HEADING).wait_for()
    drawn = await session.run_end(opened)
    first_run_end = min(at for at in session.finished if at > opened)
    started = opened if navigate else session.connected  # the server's part begins at the click or the connection
    times = {"first": [drawn - opened], "connected": [started - opened],
             "server": [first_run_end - started], "rerun": []}
    thumb = page.get_by_test_id("stSlider").first.get_by_role("slider")
    for _ in range(reruns):
        await thumb.focus()
        since = time.perf_counter()
        await thumb.press("ArrowRight")
        times["rerun"].append(await session.run_end(since) - since)
    await page.context.close()
    return times


async def measure(url: str, projects: list[str], reruns: int, training: bool,
                  warm: bool, navigate: bool) -> list[dict[str, list[float]]]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        if training:
            await start_training(browser, url)
        if warm:
            await results_session(browser, url, projects[0], reruns=0)
        results = await asyncio.gather(*(results_session(browser, url, name, reruns, navigate)
                                         for name in projects))
        await browser.close()
    return results


def summary(label: str, values: list[float]) -> str:
    return f"{label}: median {statistics.median(values):.2f} s, max {max(values):.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=5)
    parser.add_argument("--reruns", type=int, default=3, help="slider moves per session after the first render")
    parser.add_argument("--size", type=int, default=256, help="side of the demo images")
    parser.add_argument("--own-projects", action="store_true", help="a copy of the project per session")
    parser.add_argument("--no-training", action="store_true", help="measure without a training running")
    parser.add_argument("--app-root", type=Path, default=ROOT, help="the checkout whose app.py is served")
    parser.add_argument("--warm", action="store_true", help="open the page once before the sessions")
    parser.add_argument("--navigate", action="store_true",
                        help="each session loads the app on the Dataset page, then opens Results from the sidebar")
    parser.add_argument("--control", action="store_true", help="serve a trivial Results page instead (the floor)")
    parser.add_argument("--unprepared", action="store_true",
                        help="no prediction kept when the run ends: the first visitor's page predicts it")
    parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                        help="a Streamlit option for the server, e.g. runner.postScriptGC=false (repeatable)")
    args = parser.parse_args()
    if not CHROMIUM.exists():
        sys.exit(f"no Chromium at {CHROMIUM}")
    with tempfile.TemporaryDirectory(prefix="bench-results-") as folder:
        work = Path(folder)
        projects = prepare(work / "data", args.sessions, args.own_projects, args.size, args.unprepared)
        app_root = args.app_root.resolve()
        if args.control:
            app_root = control_app(app_root, work)
        server, url = start_dashboard(app_root, work / "data", work / "server.log", START_TIMEOUT_S, args.option,
                                      {"PYTHONPATH": str(app_root)})  # the served checkout's packages, not this one's
        try:
            results = asyncio.run(measure(url, projects, args.reruns, not args.no_training, args.warm,
                                         args.navigate))
        finally:
            stop_dashboard(server)
        errors = [line for line in (work / "server.log").read_text().splitlines() if "Traceback" in line]
    print(f"app {args.app_root}{' (control page)' if args.control else ''}, {args.sessions} sessions on "
          f"{'their own projects' if args.own_projects else 'one project'}"
          f"{' (after one visit)' if args.warm else ''}"
          f"{', opened from the sidebar' if args.navigate else ''}, "
          f"{'no training' if args.no_training else 'a training running'}, {os.cpu_count()} CPUs"
          + (f", options {' '.join(args.option)}" if args.option else ""))
    for index, times in enumerate(results, 1):
        reruns = ", ".join(f"{value:.2f}" for value in times["rerun"])
        opening = "from the sidebar click" if args.navigate else f"connected after {times['connected'][0]:.2f} s"
        print(f"session {index}: first render {times['first'][0]:.2f} s ({opening}, the server's script run "
              f"{times['server'][0]:.2f} s); reruns {reruns} s")
    print(summary("first render", [times["first"][0] for times in results]))
    print(summary("  of which the server's first script run", [times["server"][0] for times in results]))
    print(summary("rerun after a slider move", [value for times in results for value in times["rerun"]]))
    if errors:
        print(f"the server logged {len(errors)} traceback(s)")


if __name__ == "__main__":
    main()
