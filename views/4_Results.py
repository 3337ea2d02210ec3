"""Results: probability, variance and entropy maps, cells, metrics, downloads, predicting new images.

What a rerun needs is cached in ``dashboard.images`` (prediction, cells, heat maps, outlined picture, scores,
diagnostics), so moving a slider recomputes only what depends on it.
"""

import functools

import pandas as pd
import streamlit as st

from dashboard import images, keys, outside
from dashboard.display import display_controls
from dashboard.state import PAGES, damaged_images, require_project, user_errors
from dashboard.training import epoch_count, run_label, runs_with_checkpoints
from dashboard.uploads import IMAGE_TYPES, add_uploads, show_upload_messages
from impartial.access import check_upload_size
from impartial.config import SEED_SOURCES
from impartial.diagnostics import Finding
from impartial.export import export_file_name
from impartial.runs import Run

DOWNLOADS = {"npz": ("Prediction (npz)", "application/octet-stream"), "csv": ("Cells (CSV)", "text/csv"),
             "tiff": ("Labels (TIFF)", "image/tiff"), "roi": ("ImageJ ROIs (zip)", "application/zip"),
             "geojson": ("Cells (GeoJSON, QuPath)", "application/geo+json")}
MAX_COMPARED = 3
SEED_LABELS = {"core": "cell cores", "nuclei": "nuclei"}
# the score table's columns: plain name, what it means
SCORE_COLUMNS = {
    "f1": ("F1 at IoU 0.5", "Harmonic mean of precision and recall; a found cell matches a labelled one when they "
                            "overlap by at least half their union (IoU 0.5)"),
    "precision": ("Precision", "Share of the cells found that match a labelled cell"),
    "recall": ("Recall", "Share of the labelled cells that were found"),
    "ap": ("AP at IoU 0.5", "Matches / (matches + extra cells + missed cells), as in the Cellpose and StarDist papers"),
    "map": ("mean AP, IoU 0.5-0.95", "AP averaged over overlap thresholds from 0.5 to 0.95: rewards exact outlines"),
    "tp": ("Matched", "Cells found that match a labelled cell"),
    "fp": ("Extra", "Cells found that match no labelled cell"),
    "fn": ("Missed", "Labelled cells that no found cell matches"),
    "n_true": ("Labelled cells", "Cells in the labels"),
    "n_pred": ("Cells found", "Cells the run found"),
    "dice": ("Foreground Dice", "Overlap of the found and labelled foreground, pixel by pixel (1 = identical)"),
    "jaccard": ("Foreground IoU", "Intersection over union of the found and labelled foreground"),
}


def threshold_note(run: Run, has_cores: bool) -> str:
    """Where the sliders start: the thresholds the run chose after training (thresholds.json), and how."""
    chosen = run.thresholds
    if "threshold" not in chosen:
        return "This run has no validated thresholds yet (they are chosen when training ends): the sliders start " \
               "at the configured ones."
    note = f"The run chose cell probability {chosen['threshold']:.2f} on held-out strokes (of the thresholds that " \
           "separate the cell and background strokes best, within what a few strokes can tell apart, the nearest 0.5)"
    if has_cores and chosen.get("seeds") == "nuclei":
        note += " and nuclei as the watershed's seeds, which fit the held-out strokes better than the cell cores " \
                "(each stroke in one cell, no cell with two strokes)"
    elif has_cores and "core_threshold" in chosen:
        note += f" and seed threshold {chosen['core_threshold']:.2f}, also chosen on held-out strokes: each stroke " \
                "in one cell, no cell with two strokes"
    if chosen.get("membrane_fills_cells"):
        channel = run.config.channels[run.config.instances.membrane_channel]
        note += f". Its channel '{channel}' stains the inside of cells (thicker than the nuclei), so the watershed " \
                "draws borders along its dark lines"
    if chosen.get("cells_show_stain"):
        note += ". Its cell strokes lie where the cells' stains show, so cells are kept to the stained pixels, " \
                "each to those not much dimmer than itself"
    return note + "."


def provisional_note(run_id: str, status: dict) -> str:
    """The marker of a run still training: its results come from the checkpoints saved so far."""
    epoch = f" (epoch {epoch_count(status)})" if "epoch" in status else ""
    return f"**Provisional:** run {run_id} is still training{epoch}. These results come from the checkpoints it " \
           "has saved so far and change when it saves a better one."


def show_heat_map(column, shown_run: Run, which: str, title: str, interactive: bool, key: str = "heat") -> None:
    """One heat map in ``column``: a picture with its colour bar, or with ``interactive`` a zoomable plotly chart
    that shows the value under the cursor (slower for the browser to draw)."""
    if interactive:
        column.plotly_chart(images.figure(shown_run, project, name, which, title), theme=None,
                            key=f"{key}-{shown_run.dir.name}-{which}")
        return
    picture = images.heat(shown_run, project, name, which)
    column.image(picture.png, caption=f"{title} (colour bar: 0 to {picture.top:.3g})", width="stretch")


def show_findings(found: list[Finding]) -> None:
    """What the numbers show about a model that has not learned enough yet, with the strokes to draw next."""
    if not found:
        return
    lines = "\n".join(f"- {finding.message} {finding.suggestion}" for finding in found)
    st.warning(f"**The model has not learned enough yet.**\n\n{lines}", icon=":material/school:")
    st.page_link(PAGES["scribble"], label="Add strokes on the Scribble page", icon=":material/draw:")


project = require_project()
st.title(f"Results · {project.name}")
finished = {info.id: info for info in runs_with_checkpoints(project)}
if not finished:
    st.info("No trained runs yet: results appear once a run has saved a checkpoint.")
    st.page_link(PAGES["train"], label="Train a model")
    st.stop()

choose_run, choose_image, choose_compare = st.columns(3)
run_id = choose_run.selectbox("Run", list(finished), format_func=lambda key: run_label(finished[key]))
if keys.RESULTS_NEW_IMAGE in st.session_state:  # chosen by the upload below, before this widget exists
    st.session_state[keys.RESULTS_IMAGE] = st.session_state.pop(keys.RESULTS_NEW_IMAGE)
damaged = damaged_images(project, "They cannot be predicted until they are replaced.")
usable = [image for image in project.images() if image not in damaged]
if not usable:
    st.info("No image to show: add one on the Dataset page.")
    st.stop()
name = choose_image.selectbox("Image", usable, key=keys.RESULTS_IMAGE)
compared = choose_compare.multiselect("Compare with runs", [key for key in finished if key != run_id],
                                      max_selections=MAX_COMPARED, format_func=lambda key: run_label(finished[key]))
run = Run.load(finished[run_id].dir)
if finished[run_id].status.get("state") == "running":
    st.info(provisional_note(run_id, finished[run_id].status), icon=":material/hourglass_top:")

chosen = run.instance_config()
prediction = images.prediction(run, project, name)  # cached: moving a slider reruns only the instance step
has_cores = prediction.core is not None
slider_cols = st.columns(3 if has_cores else 2)
threshold = slider_cols[0].slider("Cell probability threshold", 0.05, 0.95, round(chosen.threshold, 2), step=0.01,
                                  key=f"threshold-{run_id}", help="Starts at the run's validated threshold")
core_threshold = seeds = None
if has_cores:
    seeds = slider_cols[1].radio("Seeds", SEED_SOURCES, index=SEED_SOURCES.index(chosen.seeds), horizontal=True,
                                 key=f"seeds-{run_id}", format_func=SEED_LABELS.get,
                                 help="What starts one cell each: the predicted cell cores or the nuclei. "
                                      "Starts at the run's choice")
    core_threshold = slider_cols[1].slider(
        "Seed (cell core) threshold", 0.05, 0.95, round(chosen.core_threshold, 2), step=0.01, disabled=seeds != "core",
        key=f"core-threshold-{run_id}", help="Each connected piece of cell core above it seeds one cell: lower "
                                             "merges touching cells, higher splits them or misses faint ones. "
                                             "Starts at the run's validated threshold")
opacity = slider_cols[-1].slider("Outline opacity", 0.0, 1.0, 0.9, step=0.05)
has_labels = project.has_labels(name)
show_labels = slider_cols[-1].checkbox("Outlines of the labels (cyan)", disabled=not has_labels,
                                       help=None if has_labels else "This image has no labels.")
display = display_controls(project, "results")
st.caption(threshold_note(run, has_cores))
found = images.segmentation(run, project, name, threshold, core_threshold, seeds)
foreground = float((found.cells > 0).mean())  # what the instance step kept (e.g. only where the stains show)
st.caption(f"At {threshold:.2f}, {foreground:.0%} of the image is foreground (cells); {int(found.cells.max())} cells. "
           "Lower the threshold to take in fainter cell parts, raise it to shrink cells back.")
show_findings(images.findings(run, project, name, threshold))

interactive = st.toggle("Interactive heat maps", key="results-interactive-maps",
                        help="Zoom in and read the value under the cursor; slower for the browser to draw")
picture, uncertainty = st.columns(2)
picture.image(images.outlined(run, project, name, threshold, core_threshold, seeds, "#ffff00", opacity, display,
                              show_labels and has_labels),
              caption=f"{name}: {int(found.cells.max())} cells found by run {run_id}", width="stretch")
show_heat_map(uncertainty, run, "entropy", "Entropy (uncertainty)", interactive)
for class_name in prediction.class_probabilities():
    left, right = st.columns(2)
    show_heat_map(left, run, f"probability:{class_name}", f"Probability: {class_name}", interactive)
    show_heat_map(right, run, f"variance:{class_name}", f"Variance: {class_name}", interactive)
if has_cores:
    left, right = st.columns(2)
    show_heat_map(left, run, "core", "Cell cores", interactive)
    show_heat_map(right, run, "core_variance", "Variance: cell cores", interactive)

scores = images.scores(run, project, name, threshold, core_threshold, seeds)
if scores is not None:
    st.subheader("Scores against the image's labels")
    st.dataframe(pd.DataFrame([scores]), hide_index=True, column_order=[key for key in SCORE_COLUMNS if key in scores],
                 column_config={key: st.column_config.NumberColumn(label, help=meaning, format="%.3f" if isinstance(
                     scores[key], float) else "%d") for key, (label, meaning) in SCORE_COLUMNS.items()
                     if key in scores})

st.subheader("Downloads")
# the files under predictions/<run>/ follow the sliders; a button makes its file only when pressed
file_names = images.keep_exports(run, project, name, threshold, core_threshold, seeds)
export_problem = images.export_problem(run, project, name)
if export_problem:
    st.warning(f"The files kept in the project's predictions/{run_id}/ folder for {name} could not be written: "
               f"{export_problem}. The downloads below still work.", icon=":material/error:")
buttons = st.columns(len(DOWNLOADS) + 1)
for column, (kind, (label, mime)) in zip(buttons[:-1], DOWNLOADS.items(), strict=True):
    column.download_button(label, functools.partial(images.export_bytes, found, project, name, kind),
                           file_name=file_names[kind], mime=mime, on_click="ignore", key=f"download-{kind}")
buttons[-1].download_button("Run folder (zip)", lambda: images.run_zip(run.dir), file_name=f"{run_id}.zip",
                            mime="application/zip", on_click="ignore", key="download-run")

if compared:
    st.subheader("Runs side by side")
    st.caption(f"All at cell probability threshold {threshold:.2f} (the slider above), so the runs differ only in "
               "what they predict.")
    for column, other_id in zip(st.columns(len(compared) + 1), [run_id, *compared], strict=True):
        other = Run.load(finished[other_id].dir)
        column.image(images.outlined(other, project, name, threshold, color="#ffff00", opacity=opacity,
                                     display=display, labels=show_labels and has_labels),
                     caption=f"{other_id}: {int(images.segmentation(other, project, name, threshold).cells.max())} "
                             "cells", width="stretch")
        show_heat_map(column, other, "entropy", f"Entropy: {other_id}", interactive, key="compare")

st.subheader("Predict new images")
with st.form("predict_uploads", clear_on_submit=True):
    uploads = st.file_uploader("Images to segment with this run", type=IMAGE_TYPES, accept_multiple_files=True)
    add_them = st.checkbox("Also add them to the project", help="Off: they are predicted and shown here with their "
                                                               "downloads, and the project stays as it is")
    if st.form_submit_button("Predict") and uploads:
        if add_them:
            added = add_uploads(project, uploads)
            if added:
                st.session_state[keys.RESULTS_NEW_IMAGE] = added[0]
                st.rerun()
        else:
            for upload in uploads:
                with user_errors(), st.spinner(f"Predicting {upload.name} ..."):
                    check_upload_size(upload.name, upload.size)
                    outside.keep(outside.predict_outside(project, run, upload.name, upload.getvalue()))
show_upload_messages()
for result in outside.kept():
    picture, files = st.columns([2, 1])
    picture.image(result.picture, caption=f"{result.name} (not in the project): {int(result.segmentation.cells.max())} "
                                          f"cells found by run {result.run_id}", width="stretch")
    for kind, (label, mime) in DOWNLOADS.items():
        files.download_button(label, functools.partial(outside.export_bytes, result, project, kind),
                              file_name=export_file_name(result.name, kind), mime=mime, on_click="ignore",
                              key=f"outside-{result.name}-{kind}")
