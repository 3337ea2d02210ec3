"""How the channels of an image are shown on a page: on / off, colour, contrast and gamma, without saving them."""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from impartial.project import Project

HIDDEN = "#000000"


@dataclass(frozen=True)
class ChannelDisplay:
    """Per channel: colour (``HIDDEN`` when off), contrast percentiles and gamma; hashable, for cache keys."""

    colors: tuple[str, ...]
    contrast: tuple[tuple[float, float], ...]
    gammas: tuple[float, ...]

    @classmethod
    def of_project(cls, project: Project) -> ChannelDisplay:
        """The project's saved colours and contrast, gamma 1."""
        return cls(tuple(project.colors), tuple((float(lo), float(hi)) for lo, hi in project.contrast),
                   (1.0,) * len(project.channels))


def display_controls(project: Project, key: str) -> ChannelDisplay:
    """Widgets for each channel, starting from the project's settings; changes apply at once on this page only
    (the Dataset page saves them for the project)."""
    saved = ChannelDisplay.of_project(project)
    colors, contrast, gammas = [], [], []
    with st.expander("Channels: show, colour, contrast, gamma"):
        for index, name in enumerate(project.channels):
            shown, color, levels, gamma = st.columns([1, 1, 3, 2], vertical_alignment="center")
            on = shown.checkbox(name, value=True, key=f"{key}-show-{index}")
            picked = color.color_picker("Colour", saved.colors[index], key=f"{key}-color-{index}",
                                        label_visibility="collapsed")
            contrast.append(levels.slider(f"{name} contrast (percentiles)", 0.0, 100.0, saved.contrast[index],
                                          step=0.1, key=f"{key}-contrast-{index}"))
            gammas.append(gamma.slider(f"{name} gamma", 0.2, 3.0, 1.0, step=0.1, key=f"{key}-gamma-{index}",
                                       help="Below 1 brightens faint signal, above 1 darkens it"))
            colors.append(picked if on else HIDDEN)
    return ChannelDisplay(tuple(colors), tuple(tuple(pair) for pair in contrast), tuple(gammas))
