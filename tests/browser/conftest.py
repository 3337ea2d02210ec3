"""A live dashboard server and a headless Chromium page for the browser tests."""

import os
from pathlib import Path

import pytest
from dashboard_server import start_dashboard, stop_dashboard

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
START_TIMEOUT_S = 90


@pytest.fixture(scope="module")
def dashboard_data_root(tmp_path_factory) -> Path:
    """The data root of this module's dashboard: tests may put projects there before opening pages."""
    return tmp_path_factory.mktemp("dashboard") / "data"


@pytest.fixture(scope="module")
def dashboard_url(dashboard_data_root):
    """Start ``streamlit run app.py`` on a free port over a fresh data root; yields its URL."""
    log = dashboard_data_root.parent / "server.log"
    server, url = start_dashboard(ROOT, dashboard_data_root, log, START_TIMEOUT_S)
    try:
        yield url
    finally:
        stop_dashboard(server)
        print(f"--- dashboard log\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    tab = context.new_page()
    tab.set_default_timeout(60_000)
    yield tab
    context.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    folder = Path(os.environ.get("IMPARTIAL_SCREENSHOTS", ROOT / "artifacts" / "screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder
