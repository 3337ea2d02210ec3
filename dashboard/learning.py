"""The project's learning curve on the Train page, with the methods export and scribble restore of a run."""

from __future__ import annotations

import functools

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from impartial.learning import learning_curve, methods_export, restore_scribbles
from impartial.project import Project
from impartial.runs import Run

from .state import device_name, job_owner, user_errors

# (column, legend name, what it means): the quality figures a run records
QUALITY = (("validation_accuracy", "held-out stroke accuracy", "pixels of held-out strokes on the right side"),
           ("stroke_consistency", "stroke consistency", "held-out strokes each in a cell of their own"),
           ("f1_unseen", "F1 on unseen labelled images", "cells matched at IoU 0.5 on labelled images not trained on"))
AXES = (("strokes", "strokes drawn"), ("annotation_minutes", "annotation minutes"))


def learning_figure(curve: pd.DataFrame) -> go.Figure:
    """Quality against strokes and against annotation minutes, one marker per run, in run order."""
    figure = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.06)
    colors = ("#1f77b4", "#ff7f0e", "#2ca02c")
    for column_index, (axis, title) in enumerate(AXES, start=1):
        for (column, name, meaning), color in zip(QUALITY, colors, strict=True):
            if curve[column].notna().any():
                figure.add_trace(go.Scatter(x=curve[axis], y=curve[column], mode="lines+markers", name=name,
                                            legendgroup=column, showlegend=column_index == 1, line={"color": color},
                                            text=curve["run"], hovertemplate=f"%{{text}}<br>{meaning}: %{{y:.3f}}"),
                                 row=1, col=column_index)
        figure.update_xaxes(title_text=title, row=1, col=column_index)
    figure.update_yaxes(title_text="quality (1 = best)", range=[0, 1.02], row=1, col=1)
    figure.update_layout(title="Learning curve: does more scribbling still help?", height=380,
                         margin={"l": 10, "r": 10, "t": 50, "b": 10}, legend={"orientation": "h", "y": -0.25})
    return figure


def learning_section(project: Project) -> None:
    """The curve (from two finished runs on), its table, and per run: methods export and scribble restore."""
    st.subheader("Learning curve")
    curve = learning_curve(project)
    if curve.empty:
        st.caption("Each finished run adds a point: how good it is against the strokes and minutes that went in.")
        return
    if len(curve) >= 2:
        st.plotly_chart(learning_figure(curve), key="learning-curve")
    else:
        st.caption("One run so far: the curve appears with the second.")
    st.dataframe(curve, hide_index=True, column_config={
        "validation_accuracy": st.column_config.NumberColumn("held-out stroke accuracy", format="%.3f",
                                                             help=QUALITY[0][2]),
        "stroke_consistency": st.column_config.NumberColumn("stroke consistency", format="%.3f", help=QUALITY[1][2]),
        "f1_unseen": st.column_config.NumberColumn("F1 unseen", format="%.3f", help=QUALITY[2][2]),
        "ap_unseen": st.column_config.NumberColumn("AP unseen", format="%.3f",
                                                   help="average precision at IoU 0.5 on the same images"),
        "annotation_minutes": st.column_config.NumberColumn("annotation min", format="%.1f",
                                                            help="time spent scribbling before the run started")})
    chosen = st.selectbox("Run", list(reversed(curve["run"])), key="learning_run",
                          help="Export it for a methods section, or put its scribbles back")
    run = Run.load(project.dir / "runs" / chosen)
    export, restore = st.columns(2)
    export.download_button("Export for a methods section", functools.partial(methods_export, run, curve,
                                                                             device_name()),
                           file_name=f"{project.name}_{chosen}_methods.zip", mime="application/zip",
                           icon=":material/description:",
                           help="Config, thresholds, quality, the exact scribbles, the learning curve, versions")
    with restore.popover("Restore its scribbles", icon=":material/history:"):
        st.write("Replace the scribbles of the images this run trained on with the ones it used (Undo on the "
                 "Scribble page brings yours back).")
        if st.button("Restore", key="restore-scribbles"):
            with user_errors():
                names = restore_scribbles(run, project, user=job_owner())
                st.success(f"Restored the scribbles of {', '.join(names)}.")
