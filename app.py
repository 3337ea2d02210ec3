"""ImPartial dashboard: ``streamlit run app.py -- [--data-root DIR] [--demo]``.

This script runs before every page: it checks the login, shows the open project in the sidebar
and hands over to the chosen page in ``views/`` (not ``pages/``: Streamlit serves
that folder's scripts by URL without running this login check first).
"""

import streamlit as st

from dashboard.access import require_user
from dashboard.state import PAGES, current_project, device_name, set_user

st.set_page_config(page_title="ImPartial", page_icon=":material/biotech:", layout="wide")
set_user(require_user())

navigation = st.navigation([
    st.Page(PAGES["home"], title="Projects", icon=":material/folder_open:", default=True),
    st.Page(PAGES["dataset"], title="Dataset", icon=":material/photo_library:"),
    st.Page(PAGES["scribble"], title="Scribble", icon=":material/draw:"),
    st.Page(PAGES["train"], title="Train", icon=":material/model_training:"),
    st.Page(PAGES["results"], title="Results", icon=":material/insights:"),
    st.Page(PAGES["batch"], title="Batch", icon=":material/dataset:"),
])

with st.sidebar:
    project = current_project()
    st.caption(f"Project: **{project.name}**" if project else "No project open")
    st.caption(f"Device: {device_name()}")

navigation.run()
