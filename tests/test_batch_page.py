"""The Batch page through AppTest: a tiny run over a small generated slide on a Dask cluster (threads in this
process; tests/test_slides.py covers worker processes), each slide's progress, a bad slide's error, Stop, and the
outputs with their downloads (too large ones named, not offered); slides from where the user may not read are
refused; a batch a server restart interrupted is offered to start again or discard."""

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from streamlit.testing.v1 import AppTest
from test_app import open_page

from dashboard import batch
from factories import serve_data_root, tiny_project_run
from impartial.demo import create_demo_project
from impartial.slides import STOPPED_MESSAGE, finished_slides
from impartial.synthetic import make_tissue

TIMEOUT_S = 60
CHUNK, MARGIN = 96, 32  # a 192 x 224 slide in 2 x 3 chunks
WORKER_FREE = threading.Event()  # the cluster's one worker thread waits for it in _hold_the_worker


def _hold_the_worker() -> None:
    """Keep the only worker busy until the test lets it go, so the page shows a batch that has not progressed."""
    WORKER_FREE.wait(TIMEOUT_S)


def _write_slide(path: Path, seed: int) -> None:
    tissue = make_tissue(192, 224, seed=seed)
    tifffile.imwrite(path, (tissue.image * 1000).astype(np.uint16), tile=(64, 64), metadata={"axes": "CYX"})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A data root whose demo project has a tiny finished run, and a folder of slides in its imports/ folder:
    one good, one with three channels (the run expects two)."""
    root = tmp_path_factory.mktemp("batch")
    project = create_demo_project(root, n_images=2, size=96)
    run_id = tiny_project_run(project, **{"train.epochs": 6, "train.lr": 0.01})
    cohort = root / "imports" / "cohort"
    cohort.mkdir(parents=True)
    _write_slide(cohort / "tissue.ome.tif", seed=3)
    tifffile.imwrite(cohort / "three.tif", np.ones((3, 64, 64), np.uint16), photometric="minisblack",
                     metadata={"axes": "CYX"})
    return root, project, run_id, cohort


@pytest.fixture(scope="module")
def cluster():
    """One worker thread in this process, reached over TCP like a server's scheduler; and a client of it."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, processes=False, threads_per_worker=1, protocol="tcp",
                      dashboard_address=None) as local, Client(local) as client:
        yield local.scheduler_address, client


@pytest.fixture
def page(trained, cluster, monkeypatch):
    """The Batch page of the demo project, with the cluster as the server's configured scheduler."""
    serve_data_root(monkeypatch, trained[0])
    monkeypatch.setenv("IMPARTIAL_DASK_SCHEDULER", cluster[0])
    return open_page("5_Batch.py", project="demo")


def start(app: AppTest, entries: str) -> AppTest:
    app.text_area[0].input(entries)
    next(box for box in app.number_input if box.label == "Chunk side (px)").set_value(CHUNK)
    next(box for box in app.number_input if box.label == "Margin (px)").set_value(MARGIN)
    next(button for button in app.button if button.label == "Start").click().run()
    assert not app.exception, app.exception
    return app


def bars(app: AppTest) -> list[str]:
    return [bar.proto.text for bar in app.get("progress")]


def rerun_until(app: AppTest, shown: str) -> AppTest:
    """Run the page again (as its fragment would every few seconds) until a progress bar or a markdown line
    holds ``shown``."""
    deadline = time.monotonic() + TIMEOUT_S
    while not any(shown in text for text in bars(app) + [line.value for line in app.markdown]):
        assert time.monotonic() < deadline, (shown, bars(app), [line.value for line in app.markdown])
        time.sleep(0.2)
        app.run()
        assert not app.exception, app.exception
    return app


def test_a_batch_shows_each_slides_progress_its_error_and_the_outputs(trained, cluster, page):
    root, project, run_id, cohort = trained
    assert page.text_input[0].value == cluster[0]  # the server's scheduler unless changed
    WORKER_FREE.clear()
    held = cluster[1].submit(_hold_the_worker, pure=False)
    try:
        start(page, str(cohort))
        rerun_until(page, "tissue.ome.tif: chunks predicted 0 / 6 · labelled 0 / 6 · measured 0 / 6")
        assert f"{cohort / 'three.tif'}: has 3 channel(s), the run expects 2" in [box.value for box in page.error]
        assert any(button.label == "Stop" for button in page.button)
    finally:
        WORKER_FREE.set()
        held.result()
    rerun_until(page, "— done")
    (line,) = [text for text in bars(page) if text.startswith("tissue.ome.tif")]
    assert line.startswith("tissue.ome.tif: done, 6 chunks, ") and line.endswith(" cells")
    assert not any(button.label == "Stop" for button in page.button)

    out = project.dir / "predictions" / run_id / "slides"
    assert finished_slides(out) == ["tissue"]
    assert any(str(out) in caption.value for caption in page.caption)
    assert [button.proto.label for button in page.get("download_button")] == ["Cells (CSV)",
                                                                             "Cells (GeoJSON, QuPath)"]
    assert (out / "tissue_cells.csv").read_text().count("\n") - 1 == int(line.split(", ")[-1].split()[0])

    csv_bytes = (out / "tissue_cells.csv").stat().st_size
    batch.MAX_DOWNLOAD_BYTES, limit = csv_bytes - 1, batch.MAX_DOWNLOAD_BYTES  # the CSV is now too large
    try:
        page.run()
    finally:
        batch.MAX_DOWNLOAD_BYTES = limit
    assert [button.proto.label for button in page.get("download_button")] == []  # the GeoJSON is larger still
    assert any(caption.value.startswith("tissue_cells.csv: ") and "too large to download here" in caption.value
               for caption in page.caption)


def test_stop_ends_the_batch_and_says_which_slides_are_unfinished(trained, cluster, page, tmp_path):
    root, _, _, _ = trained
    other = root / "imports" / "other.ome.tif"
    _write_slide(other, seed=4)
    WORKER_FREE.clear()
    held = cluster[1].submit(_hold_the_worker, pure=False)
    try:
        start(page, str(other))
        rerun_until(page, "other.ome.tif: chunks predicted 0 / 6")
        next(button for button in page.button if button.label == "Stop").click().run()
        assert any("Stopping once the next chunk task ends" in caption.value for caption in page.caption)
    finally:
        WORKER_FREE.set()  # the next task to end (the one holding the worker) lets the batch stop
        held.result()
    rerun_until(page, "— stopped")
    assert f"{other}: {STOPPED_MESSAGE}" in [box.value for box in page.error]


def test_slides_outside_what_the_user_may_read_are_refused_with_a_message(trained, page, tmp_path):
    outside = tmp_path / "elsewhere.ome.tif"
    _write_slide(outside, seed=5)
    batches = [line.value for line in page.markdown if line.value.startswith("**slides ·")]  # earlier tests'
    start(page, f"{outside}\n{trained[3]}")
    (refused,) = [box.value for box in page.error if "elsewhere" in box.value]
    assert refused.startswith(f"{outside}: on a shared server only your projects' folders, ")
    assert str(trained[0] / "imports") in refused
    # nothing started, not even the readable folder on the next line
    assert [line.value for line in page.markdown if line.value.startswith("**slides ·")] == batches


def write_interrupted_batch(project, run_id: str, slides: list[str], scheduler: str, name: str) -> None:
    """A batch record as a server that has since restarted left it (its manager is gone)."""
    settings = {"scheduler": scheduler, "workers": 1, "chunk": CHUNK, "margin": MARGIN}
    record = {"id": name, "project": project.name, "owner": "local", "run_id": run_id, "slides": slides,
              "settings": settings, "created": time.time(), "manager": "gone", "job": "job-1"}
    folder = project.dir / batch.BATCH_FOLDER
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(record))


def test_a_batch_interrupted_by_a_restart_can_be_discarded_or_started_again(trained, cluster, page):
    root, project, run_id, cohort = trained
    slide = root / "imports" / "again.ome.tif"
    _write_slide(slide, seed=6)
    for name in ("gone-job-1", "gone-job-2"):
        write_interrupted_batch(project, run_id, [str(slide)], cluster[0], name)
    page.run()
    warnings = [box.value for box in page.warning if "interrupted by a server restart" in box.value]
    assert len(warnings) == 2 and warnings[0].startswith(f"**slides · {run_id}** (1 slide(s), started ")

    next(button for button in page.button if button.key == "batch-discard-gone-job-2").click().run()
    assert [box for box in page.warning if "interrupted by a server restart" in box.value] != []
    next(button for button in page.button if button.key == "batch-again-gone-job-1").click().run()
    assert not page.exception, page.exception
    assert not [box for box in page.warning if "interrupted by a server restart" in box.value]
    rerun_until(page, "again.ome.tif: done, 6 chunks, ")
    assert "again" in finished_slides(project.dir / "predictions" / run_id / "slides")
    # the page shows the slide done just before the batch's work returns and removes its record
    deadline = time.monotonic() + TIMEOUT_S
    while list((project.dir / batch.BATCH_FOLDER).glob("*.json")):
        assert time.monotonic() < deadline, "the finished batch's record was not removed"
        time.sleep(0.1)
