"""The dashboard's login gate: call ``require_user()`` at the top of the app.

Three modes, first match wins:

1. ``.streamlit/secrets.toml`` has an ``[auth]`` section: Streamlit's built-in OIDC login
   (``st.login`` / ``st.user``); the user is the identity's e-mail (or name, or subject).
2. A password is configured (``impartial.access.load_settings``: environment, or the
   ``[access]`` table of ``secrets.toml``): a user name + password form.
3. Neither: access control is off and ``require_user()`` returns None.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn

import streamlit as st

from impartial.access import AccessSettings, LoginThrottle, load_settings
from impartial.errors import InputError

from . import keys

USER_KEY = keys.LOGIN_USER
"""``st.session_state`` key holding the user who logged in with a password."""


def _secrets_section(name: str) -> Mapping[str, Any] | None:
    """The ``[name]`` table of ``secrets.toml``; None when there is no secrets file or no such table.

    A secrets file that exists but cannot be read stops the page: guessing "no secrets" there
    would silently switch the login off.
    """
    try:
        section = st.secrets.get(name)
    except FileNotFoundError as error:  # Streamlit's "no secrets" and "unreadable secrets" errors subclass it
        if any(Path(path).exists() for path in st.get_option("secrets.files")):
            st.error(f"Cannot read the secrets file: {error}")
            st.stop()
        return None
    return section if isinstance(section, Mapping) else None


def require_user() -> str | None:
    """Return the logged-in user, None when access control is off; otherwise stop the page at a login.

    Shows who is logged in and a "Log out" button in the sidebar.
    """
    if _secrets_section("auth") is not None:
        return _require_oidc_user()
    try:
        settings = load_settings(secrets_table=_secrets_section("access"))
    except InputError as error:  # a broken users file keeps everyone out rather than letting everyone in
        st.error(f"The server's login settings are broken: {error}")
        st.stop()
    if not settings.enabled:
        return None
    user = st.session_state.get(USER_KEY)
    if user is None:
        _password_login(settings)
    _sidebar_logout(f"Logged in as **{user}**", _forget_user)
    return user


def _password_login(settings: AccessSettings) -> NoReturn:
    """Show the login form; store the user and rerun on success, else stop the page."""
    st.title("ImPartial")
    with st.form("impartial_login"):
        user = st.text_input("User name").strip()
        password = st.text_input("Password", type="password")
        submitted = st.form_submit_button("Log in")
    if submitted:
        answer = _login_throttle().attempt(user, st.context.ip_address or "unknown client",
                                           lambda: settings.verify(user, password))
        if answer is True:
            st.session_state[USER_KEY] = user
            st.rerun()
        if answer is False:
            st.error("Wrong user name or password")
        else:
            st.error(f"Too many failed logins: try again in {math.ceil(answer)} s")
    st.stop()


@st.cache_resource
def _login_throttle() -> LoginThrottle:
    """One record of failed logins for every session of this server."""
    return LoginThrottle()


def _forget_user() -> None:
    """Log out of a password session (button callback)."""
    st.session_state.pop(USER_KEY, None)


def _require_oidc_user() -> str:
    """The OIDC identity, or a "Log in" button and a stopped page when nobody is logged in."""
    identity = st.user.to_dict()  # a plain dict: "is_logged_in" may be absent before the first login
    if not identity.get("is_logged_in"):
        st.title("ImPartial")
        if importlib.util.find_spec("authlib") is None:
            st.error("secrets.toml configures an OIDC login ([auth]) but Authlib is not installed: "
                     "`pip install 'Authlib>=1.3.2'` (docs/server.md).")
            st.stop()
        st.button("Log in", on_click=st.login, type="primary")
        st.stop()
    user = str(identity.get("email") or identity.get("name") or identity.get("sub"))
    _sidebar_logout(f"Logged in as **{user}**", st.logout)
    return user


def _sidebar_logout(caption: str, log_out: Callable[[], None]) -> None:
    """Sidebar line naming the user, with a button that runs ``log_out``."""
    with st.sidebar:
        st.caption(caption)
        st.button("Log out", on_click=log_out, key="impartial_logout")
