"""The training settings form: a preset, the original's flags, a preview image, optional fine-tuning."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from impartial.config import PRECISIONS, PRESETS, RunConfig, apply_overrides, preset_config
from impartial.errors import InputError
from impartial.project import Project, RunInfo
from impartial.runs import Run

from .state import show_input_errors
from .training import run_label

# (label, config field, number format); ints have no format. Names follow the original's flags.
FIELDS = [
    ("Epochs", "train.epochs", None),
    ("Patches per epoch", "train.patches_per_epoch", None),
    ("Batch", "train.batch", None),
    ("Learning rate (lr)", "train.lr", "%.5f"),
    ("Foreground weight (wfore)", "train.wfore", "%.3f"),
    ("Background weight (wback)", "train.wback", "%.3f"),
    ("Reconstruction weight (wrec)", "train.wrec", "%.3f"),
    ("Smoothness weight (wreg)", "train.wreg", "%.3f"),
    ("Cell-core weight (wsep)", "train.wsep", "%.3f"),
    ("Kept pixel ratio (ratio)", "train.ratio", "%.3f"),
    ("Ensemble cycles (nsaves)", "train.nsaves", None),
    ("MC-dropout passes (mcdrop)", "predict.mcdrop", None),
    ("Time budget, minutes (0 = train for Epochs)", "train.max_minutes", "%.1f"),
    ("Seed", "train.seed", None),
    ("Preview every N epochs (0 = never)", "train.preview_every", None),
]
HELP = {
    "train.epochs": "Ignored when a time budget is set.",
    "train.max_minutes": "The run trains for the whole budget and Epochs is ignored: the ensemble cycles share the "
                         "time, and a cycle that stops improving leaves its time to the later ones. "
                         "0: no budget, the run trains for Epochs and early stopping may end it sooner.",
    "train.wsep": "Weight of the cell-core loss that teaches touching cells apart; used only when the run "
                  "learns to separate touching cells.",
}
# (label, config field, help): on/off settings, drawn as checkboxes under the numbers
SWITCHES = [
    ("Start from the pretrained cell prior", "train.prior",
     "Start from weights pretrained on synthetic tissue (shipped with ImPartial) when some fit this network and it "
     "has the cell-core output; otherwise, or off, from random weights."),
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


def settings_form(project: Project, finished: list[RunInfo]) -> TrainRequest | None:
    """Draw the form; returns the request when Start was pressed with valid settings, else None."""
    remembered = project.config_defaults().preset
    presets = list(PRESETS)
    preset = st.segmented_control("Preset", presets, default=remembered if remembered in presets else presets[0],
                                  required=True, key="train_preset",
                                  help="quick: a small network for a laptop CPU; full: the paper's network for a GPU")
    base = base_config(project, preset)
    damaged = project.damaged_files()
    names = [name for name in project.images() if name not in damaged]  # a damaged image cannot be previewed
    unscribbled = [name for name in names if name not in set(project.scribbled_images())]
    with st.form("train_settings"):
        columns = st.columns(2)
        values = {}
        for index, (label, field, number_format) in enumerate(FIELDS):
            current = _value(base, field)
            values[field] = columns[index % 2].number_input(label, value=current, format=number_format,
                                                            step=None if number_format else 1,
                                                            key=f"{field}-{preset}", help=HELP.get(field))
        for label, field, help_text in SWITCHES:
            values[field] = st.checkbox(label, value=_value(base, field), key=f"{field}-{preset}", help=help_text)
        values["train.precision"] = st.selectbox(
            "Precision", PRECISIONS, index=PRECISIONS.index(base.train.precision), key=f"precision-{preset}",
            help="auto: bfloat16 where the CPU or GPU computes it natively (about 1.5x faster on such CPUs), "
                 "float32 elsewhere")
        preview = st.selectbox("Preview image", names, key="preview_image",
                               index=names.index(unscribbled[0]) if unscribbled else 0)
        by_id = {info.id: info for info in finished}
        start_id = st.selectbox("Start from", [None, *by_id], format_func=lambda run_id: "a new network" if run_id
                                is None else f"fine-tune {run_label(by_id[run_id])}")
        start_from = by_id.get(start_id)
        if not st.form_submit_button("Start training", type="primary", icon=":material/play_arrow:"):
            return None
    try:
        config = apply_overrides(copy.deepcopy(base), values)
        if start_from is not None:  # fine-tuning keeps the earlier network's shape, its outputs included
            earlier = Run.load(start_from.dir).config
            config.model, config.separation = copy.deepcopy(earlier.model), earlier.separation
        config.validate()
        project.save_settings(config)
    except InputError as error:
        show_input_errors([error])
        return None
    return TrainRequest(config, preview, None if start_from is None else start_from.dir)
