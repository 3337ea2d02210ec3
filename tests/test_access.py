"""Access control of a shared server: passwords, per-user hashes, project visibility, the login gate."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from impartial import access
from impartial.access import can_open, check_password, hash_password, load_settings
from impartial.config import whole_cell_tasks
from impartial.errors import InputError

# One hash made once: scrypt costs ~50 ms a call.
ALICE_HASH = hash_password("alice-secret")


def test_no_password_configured_means_access_is_off():
    settings = load_settings(environ={}, secrets_table=None)
    assert not settings.enabled
    assert not access.access_enabled({})
    assert not settings.verify("alice", "anything")


def test_shared_password_admits_any_valid_name_and_rejects_a_wrong_password():
    environ = {access.PASSWORD_ENV: "lab-password"}
    assert access.access_enabled(environ)
    assert access.verify("alice", "lab-password", environ)
    assert access.verify("bob.smith@lab", "lab-password", environ)
    assert not access.verify("alice", "lab-passwor", environ)
    assert not access.verify("alice", "", environ)
    assert not access.verify("", "lab-password", environ)
    assert not access.verify("../alice", "lab-password", environ)


def test_a_listed_user_needs_their_own_password_not_the_shared_one():
    settings = load_settings({access.PASSWORD_ENV: "lab-password", access.USERS_ENV: f"alice:{ALICE_HASH}"})
    assert settings.verify("alice", "alice-secret")
    assert not settings.verify("alice", "lab-password")
    assert settings.verify("bob", "lab-password")
    assert not settings.verify("bob", "alice-secret")


def test_hash_matches_the_rfc7914_scrypt_test_vector():
    # RFC 7914 section 12, N=16384 r=8 p=1: the first 32 bytes of the 64-byte key.
    stored = hash_password("pleaseletmein", salt=b"SodiumChloride")
    assert stored == ("scrypt:16384:8:1:" + b"SodiumChloride".hex() + ":"
                      "7023bdcb3afd7348461c06cd81fd38ebfda8fbba904f8e3ea9b543f6545da1f2")


def test_hashes_are_salted_and_malformed_hashes_never_match():
    second = hash_password("alice-secret")
    assert second != ALICE_HASH
    assert check_password("alice-secret", second) and check_password("alice-secret", ALICE_HASH)
    assert not check_password("alice-secret", "plain-text-password")
    assert not check_password("alice-secret", ALICE_HASH.replace("scrypt", "md5", 1))
    with pytest.raises(InputError, match="empty"):
        hash_password("")


def test_users_file_and_variable_are_merged(tmp_path):
    bob_hash = hash_password("bob-secret", salt=b"0123456789abcdef")
    users_file = tmp_path / "users"
    users_file.write_text(f"# lab members\nalice:{ALICE_HASH}\n\n", encoding="utf-8")
    settings = load_settings({access.USERS_FILE_ENV: str(users_file), access.USERS_ENV: f" bob:{bob_hash} ,"})
    assert sorted(settings.users) == ["alice", "bob"]
    assert settings.enabled and settings.shared_password is None
    assert settings.verify("bob", "bob-secret") and not settings.verify("carol", "bob-secret")


def test_a_bad_users_file_names_the_file_and_line(tmp_path):
    users_file = tmp_path / "users"
    users_file.write_text(f"alice:{ALICE_HASH}\nbob:not-a-hash\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"users line 2: the password hash of 'bob'"):
        load_settings({access.USERS_FILE_ENV: str(users_file)})
    with pytest.raises(InputError, match="cannot read the users file") as error:
        load_settings({access.USERS_FILE_ENV: str(tmp_path / "missing")})
    assert error.value.path == str(tmp_path / "missing")
    with pytest.raises(InputError, match="not a valid user name"):
        load_settings({access.USERS_ENV: f"al ice:{ALICE_HASH}"})


def test_environment_wins_over_the_secrets_table():
    secrets_table = {"password": "from-secrets", "users": {"alice": ALICE_HASH}}
    from_secrets = load_settings({}, secrets_table)
    assert from_secrets.verify("bob", "from-secrets") and from_secrets.verify("alice", "alice-secret")
    overridden = load_settings({access.PASSWORD_ENV: "from-env"}, secrets_table)
    assert overridden.verify("bob", "from-env") and not overridden.verify("bob", "from-secrets")


@pytest.mark.parametrize(("meta", "user", "expected"), [
    ({"owner": "alice", "shared": False}, None, True),     # access off: everything visible
    ({"owner": None, "shared": False}, "bob", True),       # made before access was turned on
    ({}, "bob", True),
    ({"owner": "alice", "shared": False}, "alice", True),
    ({"owner": "alice", "shared": False}, "bob", False),
    ({"owner": "alice"}, "bob", False),
    ({"owner": "alice", "shared": True}, "bob", True),
])
def test_can_open_is_owner_or_shared(meta, user, expected):
    assert can_open(meta, user) is expected


def test_one_user_cannot_open_another_users_project(tmp_path):
    from impartial.project import create_project, list_projects, open_project  # the store that calls can_open

    create_project(tmp_path, "alice_private", ["membrane", "nuclei"], whole_cell_tasks(), owner="alice")
    create_project(tmp_path, "alice_shared", ["membrane", "nuclei"], whole_cell_tasks(), owner="alice", shared=True)
    assert [info.name for info in list_projects(tmp_path, user="bob")] == ["alice_shared"]
    assert [info.name for info in list_projects(tmp_path, user="alice")] == ["alice_private", "alice_shared"]
    with pytest.raises(PermissionError):
        open_project(tmp_path, "alice_private", user="bob")
    assert open_project(tmp_path, "alice_private", user="alice").owner == "alice"


def test_hash_command_prints_a_line_the_users_file_accepts(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr("sys.stdin", io.StringIO("carol-secret\n"))
    assert access.main(["carol"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("carol:scrypt:16384:8:1:")
    users_file = tmp_path / "users"
    users_file.write_text(line + "\n", encoding="utf-8")
    assert load_settings({access.USERS_FILE_ENV: str(users_file)}).verify("carol", "carol-secret")
    assert access.main(["bad name"]) == 2


def _gated_page() -> None:
    import streamlit as st

    from dashboard.access import require_user

    user = require_user()
    st.markdown(f"welcome {user}")


def _gate(monkeypatch, **environ: str) -> AppTest:
    for name in (access.PASSWORD_ENV, access.USERS_ENV, access.USERS_FILE_ENV):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    return AppTest.from_function(_gated_page, default_timeout=10).run()


def test_login_gate_is_invisible_when_access_is_off(monkeypatch):
    app = _gate(monkeypatch)
    assert [element.value for element in app.markdown] == ["welcome None"]
    assert not app.text_input


def test_login_gate_rejects_a_wrong_password_and_admits_the_right_one(monkeypatch):
    app = _gate(monkeypatch, IMPARTIAL_PASSWORD="lab-password")
    assert not app.markdown  # the page stops at the form
    app.text_input[0].input("alice")
    app.text_input[1].input("wrong")
    app.button[0].click().run()
    assert [element.value for element in app.error] == ["Wrong user name or password"]
    assert not app.markdown
    app.text_input[1].input("lab-password")
    app.button[0].click().run()
    assert not app.error
    assert [element.value for element in app.markdown] == ["welcome alice"]
    assert app.session_state["impartial_user"] == "alice"
    app.sidebar.button[0].click().run()  # "Log out"
    assert not app.markdown and len(app.text_input) == 2


def test_login_gate_uses_oidc_when_secrets_configure_it(monkeypatch):
    for name in (access.PASSWORD_ENV, access.USERS_ENV, access.USERS_FILE_ENV):
        monkeypatch.delenv(name, raising=False)
    app = AppTest.from_function(_gated_page, default_timeout=10)
    app.secrets["auth"] = {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "x" * 32}
    app.run()
    assert not app.markdown  # nobody is logged in: the page stops at the OIDC login
    assert [element.value for element in app.title] == ["ImPartial"]
    assert not app.text_input  # no password form


APP = Path(__file__).resolve().parents[1] / "app.py"
PAGE_SCRIPTS = sorted(path.name for path in (APP.parent / "views").glob("*.py"))


@pytest.mark.parametrize("page", PAGE_SCRIPTS)
def test_a_page_script_opened_directly_shows_the_login_form_until_the_password_is_given(data_root, monkeypatch,
                                                                                      page):
    # Streamlit serves a pages/ folder by URL without running app.py's login check (until some session has
    # called st.navigation); a page script must never be reachable without the login.
    monkeypatch.setenv(access.PASSWORD_ENV, "lab-password")
    app = AppTest.from_file(str(APP), default_timeout=60)
    app.switch_page(f"views/{page}").run()
    assert not app.exception, app.exception
    assert [field.label for field in app.text_input] == ["User name", "Password"]
    assert not app.sidebar.caption  # the page and the sidebar after the login check did not run
    app.text_input[0].input("alice")
    app.text_input[1].input("lab-password")
    app.button[0].click().run()
    assert not app.exception, app.exception
    assert not app.text_input or [field.label for field in app.text_input] != ["User name", "Password"]
    assert any(caption.value.startswith("Device:") for caption in app.sidebar.caption)


def test_page_scripts_do_not_live_in_a_folder_named_pages():
    # The test above runs pages through AppTest, which never serves a URL: Streamlit routes URLs straight to
    # pages/*.py (its older multipage mode) until app.py has called st.navigation once in the server process,
    # so a pages/ folder would let anyone open /Projects without logging in.
    assert not (APP.parent / "pages").is_dir(), "move pages/ to another folder name: it bypasses the login gate"


def test_login_gate_keeps_everyone_out_when_the_users_file_is_broken(monkeypatch, tmp_path):
    users_file = tmp_path / "users"
    users_file.write_text("alice:plain-password\n", encoding="utf-8")
    app = _gate(monkeypatch, IMPARTIAL_USERS_FILE=str(users_file))
    assert not app.markdown and not app.text_input
    assert "users line 1" in app.error[0].value


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failed_logins_cost_growing_waits_per_user_name_and_per_client():
    clock = FakeClock()
    throttle = access.LoginThrottle(clock)
    for _ in range(3):  # three free tries
        assert throttle.attempt("alice", "10.0.0.1", lambda: False) is False
    assert throttle.attempt("alice", "10.0.0.1", lambda: True) == pytest.approx(1.0)  # 2 ** 0 s, not checked
    assert throttle.wait_s("bob", "10.0.0.1") == pytest.approx(1.0)  # the same client, another name
    assert throttle.wait_s("alice", "10.0.0.2") == pytest.approx(1.0)  # the same name, another client
    assert throttle.wait_s("bob", "10.0.0.2") == 0
    clock.now += 1.0
    assert throttle.attempt("alice", "10.0.0.1", lambda: False) is False
    assert throttle.wait_s("alice", "10.0.0.1") == pytest.approx(2.0)  # doubles with each failure
    clock.now += 2.0
    assert throttle.attempt("alice", "10.0.0.1", lambda: True) is True  # a success clears both records
    assert throttle.wait_s("alice", "10.0.0.1") == 0 and throttle.wait_s("carol", "10.0.0.1") == 0


def test_the_wait_is_capped():
    clock = FakeClock()
    throttle = access.LoginThrottle(clock)
    for _ in range(30):
        throttle.attempt("alice", "c", lambda: False)
        clock.now += throttle.wait_s("alice", "c")
    throttle.attempt("alice", "c", lambda: False)
    assert throttle.wait_s("alice", "c") == access.LoginThrottle.MAX_DELAY_S


def test_an_unknown_user_name_costs_one_scrypt_like_a_known_one(monkeypatch):
    settings = access.AccessSettings(shared_password="lab", users={"alice": ALICE_HASH})
    calls = []
    real = access._scrypt
    monkeypatch.setattr(access, "_scrypt", lambda *args: calls.append(args[0]) or real(*args))
    for user in ("alice", "nobody", "alice", "nobody"):
        calls.clear()
        settings.verify(user, "wrong")
        assert len(calls) == 1, user


def test_login_gate_throttles_repeated_wrong_passwords(monkeypatch):
    from dashboard.access import _login_throttle

    _login_throttle.clear()
    app = _gate(monkeypatch, IMPARTIAL_PASSWORD="lab-password")
    app.text_input[0].input("mallory")
    for _ in range(3):
        app.text_input[1].input("guess")
        app.button[0].click().run()
        assert [element.value for element in app.error] == ["Wrong user name or password"]
    app.text_input[1].input("lab-password")  # right, but within the wait: not even checked
    app.button[0].click().run()
    assert [element.value for element in app.error] == ["Too many failed logins: try again in 1 s"]
    assert "impartial_user" not in app.session_state
    _login_throttle.clear()
