"""The training settings form: preset, run length with its time estimate, preview image, fine-tuning, and the
original's flags under "Advanced"."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from impartial.config import PRECISIONS, PRESETS, RunConfig, apply_overrides, preset_config
from impartial.errors import InputError
from impartial.project import Project, RunInfo
from impartial.runs import Run

from . import keys
from .state import user_errors
from .training import device_pace, estimate_line, measured_pace, run_label

# (label, config field, number format, help); ints have no format. Names follow the original's flags.
# How long the run trains: drawn outside the form, so the time estimate under them follows every change.
LENGTH_FIELDS = [
    ("Time budget, minutes (0 = train for Epochs)", "train.max_minutes", "%.1f",
     "The run trains for the whole budget and Epochs is ignored: the ensemble cycles share the time, and a cycle "
     "that stops improving leaves its time to the later ones. 0: no budget, the run trains for Epochs and early "
     "stopping may end it sooner."),
    ("Epochs", "train.epochs", None, "How many epochs the run trains when there is no time budget; ignored with one."),
    ("Patches per epoch", "train.patches_per_epoch", None,
     "Random patches of the scribbled images trained on per epoch; validation runs after each epoch."),
]
PLAIN_FIELDS = [
    ("Preview every N epochs (0 = never)", "train.preview_every", None,
     "Predict the preview image after the first epoch and then every N epochs, to watch the run learn; each "
     "preview costs one prediction of the image."),
]
# The method's loss weights and ensemble knobs, in the "Advanced" expander.
ADVANCED_FIELDS = [
    ("Batch", "train.batch", None, "Patches per optimisation step: larger takes more memory, smaller is noisier."),
    ("Learning rate (lr)", "train.lr", "%.5f",
     "Adam's step size; with a time budget it falls along a cosine to 5 % of this within each ensemble cycle."),
    ("Foreground weight (wfore)", "train.wfore", "%.3f", "Weight of the cross-entropy on the class strokes."),
    ("Background weight (wback)", "train.wback", "%.3f", "Weight of the cross-entropy on the background strokes."),
    ("Reconstruction weight (wrec)", "train.wrec", "%.3f",
     "Weight of reconstructing the blind-spot pixels: what the network learns from the unscribbled image."),
    ("Automatic strokes from the stains (stain_strokes)", "train.stain_strokes", "%.2f",
     "Share of the pixels where the stains are unambiguous (bright in the nuclear stain or a stain that fills "
     "cells: cell; dark in every stain: background) that training adds as strokes of its own, away from your "
     "strokes, outside the held-out box and only on images with fewer than 40 cell strokes. With few strokes "
     "they teach what cells look like on the next image; near your strokes yours decide. 0: only yours."),
    ("Smoothness weight (wreg)", "train.wreg", "%.3f",
     "Weight of the total variation of the component probabilities: higher gives smoother maps."),
    ("Cell-core weight (wsep)", "train.wsep", "%.3f",
     "Weight of the cell-core loss that teaches touching cells apart; used only when the run learns to separate "
     "touching cells."),
    ("Kept pixel ratio (ratio)", "train.ratio", "%.3f",
     "Share of each patch's pixels the network sees; the rest are blind spots it must reconstruct."),
    ("Ensemble cycles (nsaves)", "train.nsaves", None,
     "The run is split into this many cycles, each keeping its best checkpoint; predictions average them."),
    ("MC-dropout passes (mcdrop)", "predict.mcdrop", None,
     "Dropout passes per checkpoint when predicting: more give steadier means and variances, at their cost in "
     "time."),
    ("Seed", "train.seed", None, "Seeds the weights, patches and blind spots: the same seed repeats a run."),
]
ESTIMATE_HELP = ("Measured, not guessed: the patches per second of the newest earlier run of this project that "
                 "trained the same network (channels, outputs, patch, batch, precision, device) here, validation "
                 "and previews included; before any such run, a few training steps timed on this device. Setting "
                 "up and choosing thresholds at the end add a little.")
# (label, config field, help): on/off settings, drawn as checkboxes in the "Advanced" expander
SWITCHES = [
    ("Start from the pretrained cell prior", "train.prior",
     "Start from weights pretrained on synthetic tissue (shipped with ImPartial) when they fit this network (its "
     "channels, depth and width); otherwise, or off, from random weights. On tissue like the synthetic demo it "
     "steadies runs from a few strokes; on real Vectra tissue it scored slightly lower (README)."),
    ("Learn to separate touching cells (cell-core output)", "separation",
     "Experimental: one more output, each cell's core, learned from the strokes; the run then picks cores or "
     "nuclei as seeds on its held-out strokes. On unseen Vectra tissue it scored below the default (README)."),
]


@dataclass
class TrainRequest:
    """What the user asked for when pressing Start."""

    config: RunConfig
    preview_name: str | None
    init_from: Path | None


def _value(config: RunConfig, field: str):
    """A ``section.name`` or top-level setting of ``config``."""
    section, _, name = field.rpartition(".")
    return getattr(getattr(config, section) if section else config, name)


def base_config(project: Project, preset: str) -> RunConfig:
    """The project's last settings when they used ``preset``, else the preset with the project's tasks."""
    remembered = project.config_defaults()
    if remembered.preset == preset:
        return remembered
    config = preset_config(preset, tasks=project.tasks)
    config.channels, config.instances = project.channels, remembered.instances
    return config


def _number(container, base: RunConfig, preset: str, label: str, field: str, number_format: str | None,
            help_text: str):
    """One number field of ``base``'s settings in ``container``; its key names the field and the preset."""
    return container.number_input(label, value=_value(base, field), format=number_format,
                                  step=None if number_format else 1, key=f"{field}-{preset}", help=help_text)


def settings_form(project: Project, finished: list[RunInfo], blocked: bool = False) -> TrainRequest | None:
    """Draw the form; returns the request when Start was pressed with valid settings, else None.

    The run's length and its time estimate come first, then the form: preview, where to start from, and the
    method's weights and ensemble knobs under "Advanced". ``blocked``: Start is disabled (the page says why).
    """
    remembered = project.config_defaults().preset
    presets = list(PRESETS)
    preset = st.segmented_control("Preset", presets, default=remembered if remembered in presets else presets[0],
                                  required=True, key="train_preset",
                                  help="quick: a small network for a laptop CPU; full: the paper's network for a GPU")
    base = base_config(project, preset)
    damaged = project.damaged_files()
    names = [name for name in project.images() if name not in damaged]  # a damaged image cannot be previewed
    unscribbled = [name for name in names if name not in set(project.scribbled_images())]
    values = {field: _number(st, base, preset, label, field, number_format, help_text)
              for label, field, number_format, help_text in LENGTH_FIELDS}
    try:
        planned = apply_overrides(copy.deepcopy(base), values).validate()
        pace = measured_pace(project.runs(), planned) or device_pace(planned)
        st.caption(estimate_line(planned, pace), help=ESTIMATE_HELP)
    except InputError:
        pass  # a value the form refuses on Start, with its message
    with st.form("train_settings"):
        preview = st.selectbox("Preview image", names, key=keys.PREVIEW_IMAGE,
                               index=names.index(unscribbled[0]) if unscribbled else 0,
                               help="The image predicted during training to show progress: by default one "
                                    "without scribbles, which shows what the network learned beyond them.")
        for label, field, number_format, help_text in PLAIN_FIELDS:
            values[field] = _number(st, base, preset, label, field, number_format, help_text)
        by_id = {info.id: info for info in finished}
        start_id = st.selectbox("Start from", [None, *by_id], format_func=lambda run_id: "a new network" if run_id
                                is None else f"fine-tune {run_label(by_id[run_id])}",
                                help="A new network, or the weights of an earlier run, to fine-tune after adding "
                                     "scribbles where it was wrong (keeps that run's network shape).")
        with st.expander("Advanced: loss weights, ensemble, precision"):
            columns = st.columns(2)
            for index, (label, field, number_format, help_text) in enumerate(ADVANCED_FIELDS):
                values[field] = _number(columns[index % 2], base, preset, label, field, number_format, help_text)
            for label, field, help_text in SWITCHES:
                values[field] = st.checkbox(label, value=_value(base, field), key=f"{field}-{preset}",
                                            help=help_text)
            values["train.precision"] = st.selectbox(
                "Precision", PRECISIONS, index=PRECISIONS.index(base.train.precision), key=f"precision-{preset}",
                help="auto: bfloat16 where the CPU or GPU computes it natively (about 1.5x faster on such CPUs), "
                     "float32 elsewhere")
        start_from = by_id.get(start_id)
        if not st.form_submit_button("Start training", type="primary", icon=":material/play_arrow:",
                                     disabled=blocked):
            return None
    with user_errors():
        config = apply_overrides(copy.deepcopy(base), values)
        if start_from is not None:  # fine-tuning keeps the earlier network's shape, its outputs included
            earlier = Run.load(start_from.dir).config
            config.model, config.separation = copy.deepcopy(earlier.model), earlier.separation
        config.validate()
        project.save_settings(config)
        return TrainRequest(config, preview, None if start_from is None else start_from.dir)
    return None
